"""telemetry.services.error_days: the errors page reads closed days from ErrorDay rows and shows
what grouping every raw event shows, before and after late events, a purge and an install's
deletion; no row outlives the events it names installs from."""

import datetime as dt
import re

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from telemetry.ingest.pipeline import ingest
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import DailyActivity, ErrorDay, Event
from telemetry.services import error_days, purge
from telemetry.services.deletion import delete_install
from telemetry.services.demo import seed_demo
from telemetry.services.schedule import run_job
from tests.analytics.data import brute_error_groups
from tests.factories import fold, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(client):
    user = get_user_model().objects.create_user("maint", password="pw-123456789")
    client.force_login(user)
    return user


def seeded(member, *, seed: int, days: int = 20, events: int = 4000):
    """A demo project (seed_demo fills its closed days' ErrorDay rows) the member can see."""
    project = make_project().project
    project.members.add(member)
    seed_demo(project=project, installs=60, events=events, days=days, seed=seed, now=timezone.now())
    return project


def errors_table(client, project, start: dt.date, end: dt.date) -> str:
    r = client.get(f"/dashboard/{project.slug}/errors/", {"start": start, "end": end})
    assert r.status_code == 200
    html = r.content.decode()
    return html[html.index('<table id="errors">') : html.index("</table>")]


def table_without_rollup(client, project, start, end) -> str:
    """The page as every raw event groups it: the same request with no ErrorDay row."""
    with transaction.atomic():
        ErrorDay.objects.filter(project=project).delete()
        html = errors_table(client, project, start, end)
        transaction.set_rollback(True)
    return html


def shown(html: str) -> dict[tuple[str, str, str], tuple[int, int]]:
    """{(type, message, stack line): (count, installs)} as the table shows them."""
    rows = re.findall(
        r"<tr><td>(.*?)</td><td>(.*?)</td><td><code>(.*?)</code></td>\s*"
        r'<td class="num">(\d+)</td><td class="num">(\d+)</td>',
        html,
    )
    return {(k, m, s): (int(n), int(i)) for k, m, s, n, i in rows}


def assert_page_is_brute_force(client, project, start, end):
    html = errors_table(client, project, start, end)
    assert html == table_without_rollup(client, project, start, end)
    brute = brute_error_groups(project, start, end)
    assert sorted(shown(html).values()) == sorted(
        (g["count"], len(g["installs"])) for g in brute.values()
    )
    assert sum(n for n, _ in shown(html).values()) == sum(g["count"] for g in brute.values())


def error_event(install_id: str, when: dt.datetime, message: str = "late boom") -> IncomingEvent:
    props = {"type": "LateError", "message": message, "stack": "LateError\n  at late (x.py:1)"}
    return IncomingEvent(
        install_id=install_id, name="error.crash", timestamp=when, properties=props
    )


def send_errors(project, events, now=None):
    ingest(project=project, events=events, client_ip="192.0.2.1", now=now or timezone.now())
    fold()


def test_every_closed_day_has_rows_and_the_page_equals_every_event_grouped(client, member):
    project = seeded(member, seed=41)
    today = timezone.now().date()
    days = set(ErrorDay.objects.filter(project=project).values_list("day", flat=True))
    first = min(e.timestamp for e in Event.objects.filter(project=project)).date()
    assert days == {first + dt.timedelta(days=i) for i in range((today - first).days)}
    assert ErrorDay.objects.filter(project=project).exclude(key="").exists()
    send_errors(project, [error_event("inst_today_0001", timezone.now())])  # today: counted raw
    assert_page_is_brute_force(client, project, today - dt.timedelta(days=19), today)
    assert_page_is_brute_force(client, project, today - dt.timedelta(days=6), today)
    assert error_days.refresh_error_days(project=project, now=timezone.now()).days == 0


def test_the_page_serves_a_day_from_its_rows_while_the_day_count_holds(client, member):
    project = seeded(member, seed=42)
    day = timezone.now().date() - dt.timedelta(days=3)
    row = ErrorDay.objects.filter(project=project, day=day).exclude(key="").first()
    ErrorDay.objects.filter(pk=row.pk).update(events=9999)
    assert f'<td class="num">{9999 + 0}' in errors_table(client, project, day, day)
    # A late event on that day changes its count: the day is grouped from raw events again.
    send_errors(
        project, [error_event("inst_late_0001", dt.datetime.combine(day, dt.time(12), dt.UTC))]
    )
    html = errors_table(client, project, day, day)
    assert "9999" not in html
    assert_page_is_brute_force(client, project, day, day)


def test_a_late_event_is_shown_at_once_and_its_day_recounted_by_the_job(client, member):
    project = seeded(member, seed=43)
    today = timezone.now().date()
    late = dt.datetime.combine(today - dt.timedelta(days=5), dt.time(8), dt.UTC)
    send_errors(project, [error_event("inst_late_0002", late)])
    start = today - dt.timedelta(days=19)
    assert_page_is_brute_force(client, project, start, today)
    run = run_job("refresh_cohorts")
    assert run.ok and run.details["error_days"] == {project.slug: 1}
    assert ErrorDay.objects.filter(project=project, day=late.date(), kind="LateError").exists()
    assert_page_is_brute_force(client, project, start, today)
    assert "late boom" in errors_table(client, project, start, today)


def test_a_purge_takes_the_rows_of_purged_days_and_the_page_stays_exact(client, member):
    project = seeded(member, seed=44, days=30)
    now = timezone.now()
    project.retention_days = 12
    project.save(update_fields=["retention_days"])
    purge.purge(now=now)
    cutoff = now.date() - dt.timedelta(days=12)
    assert not ErrorDay.objects.filter(project=project, day__lt=cutoff).exists()
    assert ErrorDay.objects.filter(project=project, day__gte=cutoff).exists()
    start = now.date() - dt.timedelta(days=29)
    assert_page_is_brute_force(client, project, start, now.date())
    assert error_days.refresh_error_days(project=project, now=now).days == 0
    assert_page_is_brute_force(client, project, start, now.date())


def named_installs(project) -> set[str]:
    return {
        i
        for ids in ErrorDay.objects.filter(project=project).values_list("installs", flat=True)
        for i in ids
    }


def test_deleting_an_install_leaves_no_row_naming_it_and_counts_stay_exact(client, member):
    project = seeded(member, seed=45)
    today = timezone.now().date()
    row = ErrorDay.objects.filter(project=project).exclude(key="").order_by("day").first()
    gone = row.installs[0]
    days = {
        d.date()
        for d in Event.objects.filter(project=project, install_id=gone).datetimes(
            "timestamp", "day", tzinfo=dt.UTC
        )
    }
    delete_install(project=project, install_id=gone)
    assert gone not in named_installs(project)
    start = today - dt.timedelta(days=19)
    assert_page_is_brute_force(client, project, start, today)
    assert gone not in errors_table(client, project, start, today)
    counted = error_days.refresh_error_days(project=project, now=timezone.now())
    # Its days from the oldest activity left: when it was the only install active on the first
    # day, that day has only the anonymous snapshots now, and no ErrorDay row.
    oldest = DailyActivity.objects.filter(project=project).aggregate(d=Min("day"))["d"]
    assert counted.days == len({d for d in days if oldest <= d < today})
    assert gone not in named_installs(project)
    assert_page_is_brute_force(client, project, start, today)


def test_a_day_without_errors_keeps_one_empty_row_and_is_not_counted_again(client, member):
    project = make_project().project
    project.members.add(member)
    now = timezone.now()
    two_days_ago = now - dt.timedelta(days=2)
    send_errors(
        project,
        [IncomingEvent(install_id="inst_calm_0001", name="app.start", timestamp=two_days_ago)],
        now=now,
    )
    send_errors(project, [error_event("inst_calm_0001", now - dt.timedelta(days=1))], now=now)
    assert error_days.refresh_error_days(project=project, now=now).days == 2
    rows = ErrorDay.objects.filter(project=project).order_by("day")
    assert [(r.day, r.key == "", r.events) for r in rows] == [
        (two_days_ago.date(), True, 0),
        ((now - dt.timedelta(days=1)).date(), False, 1),
    ]
    assert error_days.refresh_error_days(project=project, now=now).days == 0
    assert_page_is_brute_force(client, project, two_days_ago.date(), now.date())


def test_the_scan_limit_caps_only_the_days_grouped_from_raw_events(client, member, monkeypatch):
    from telemetry.analytics import errors

    project = seeded(member, seed=47)
    monkeypatch.setattr(errors, "SCAN_LIMIT", 3)
    today = timezone.now().date()
    start, yesterday = today - dt.timedelta(days=19), today - dt.timedelta(days=1)
    brute = brute_error_groups(project, start, yesterday)
    assert sum(g["count"] for g in brute.values()) > 3
    html = errors_table(client, project, start, yesterday)
    assert sorted(shown(html).values()) == sorted(
        (g["count"], len(g["installs"])) for g in brute.values()
    )
    send_errors(project, [error_event(f"inst_now_{i:04d}", timezone.now()) for i in range(5)])
    r = client.get(f"/dashboard/{project.slug}/errors/", {"start": start, "end": today})
    assert "only the newest of those were grouped" in r.content.decode()
    counts = shown(errors_table(client, project, start, today))
    assert counts[("LateError", "late boom", "LateError")] == (3, 3)
    assert sum(n for n, _ in counts.values()) == sum(g["count"] for g in brute.values()) + 3
