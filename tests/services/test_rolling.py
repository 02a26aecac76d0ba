"""telemetry.services.rolling: the closed-day rollups behind the overview's DAU/WAU/MAU, version
adoption and OS split, held to a brute-force count over raw events before and after late
events, a purge and an install's deletion."""

import datetime as dt
from collections import defaultdict

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from telemetry.analytics import active, db
from telemetry.ingest.pipeline import ingest
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import DailyActivity, Event, OsActivity, RollingActivity
from telemetry.services import purge, rolling
from telemetry.services.deletion import delete_install
from telemetry.services.schedule import run_job
from tests.analytics.data import Brute, seeded_project
from tests.factories import fold, ingest_at

pytestmark = pytest.mark.django_db


def assert_rolling_is_brute_force(project, days):
    brute = Brute(project)
    for day in days:
        r = active.rolling(project=project, day=day)
        assert (r.dau, r.wau, r.mau) == (
            brute.active(day, day),
            brute.active(day - dt.timedelta(days=6), day),
            brute.active(day - dt.timedelta(days=29), day),
        ), day


def versions_by_day(project, start, end):
    """{day: {version: installs}} straight from the daily activity rows."""
    out: dict = {}
    for row in DailyActivity.objects.filter(project=project, day__gte=start, day__lte=end):
        day = out.setdefault(row.day.isoformat(), {})
        day[row.app_version] = day.get(row.app_version, 0) + 1
    return out


def test_it_counts_every_closed_day_from_the_oldest_activity_to_yesterday(client):
    p = seeded_project(client, seed=31, days=40)
    now = timezone.now()
    done = rolling.refresh_rolling(project=p.project, now=now)
    days = sorted(RollingActivity.objects.filter(project=p.project).values_list("day", flat=True))
    oldest = active.raw_boundary(project=p.project)
    yesterday = now.date() - dt.timedelta(days=1)
    assert days == [oldest + dt.timedelta(days=i) for i in range((yesterday - oldest).days + 1)]
    assert done.days == len(days)
    assert_rolling_is_brute_force(p.project, [now.date() - dt.timedelta(days=k) for k in range(45)])


def test_a_second_refresh_recounts_nothing(client):
    p = seeded_project(client, seed=32, days=20)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    assert rolling.refresh_rolling(project=p.project, now=timezone.now()).days == 0


def test_readers_serve_the_stored_row_while_its_fingerprint_holds(client):
    p = seeded_project(client, seed=33, days=20)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    day = timezone.now().date() - dt.timedelta(days=5)
    RollingActivity.objects.filter(project=p.project, day=day).update(dau=9999)
    assert active.rolling(project=p.project, day=day).dau == 9999
    (series,) = active.active_series(project=p.project, interval="day", start=day, end=day)
    assert series.active_installs == 9999
    RollingActivity.objects.filter(project=p.project, day=day).update(fingerprint="0:-")
    assert active.rolling(project=p.project, day=day).dau == Brute(p.project).active(day, day)
    (series,) = active.active_series(project=p.project, interval="day", start=day, end=day)
    assert series.active_installs == Brute(p.project).active(day, day)


def assert_daily_series_is_brute_force(project, start, end):
    brute = Brute(project)
    series = active.active_series(project=project, interval="day", start=start, end=end)
    assert [s.active_installs for s in series] == [brute.active(s.start, s.start) for s in series]


def test_a_late_event_is_counted_at_once_and_its_days_recounted_by_the_job(client):
    p = seeded_project(client, seed=34, days=30)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    late = timezone.now() - dt.timedelta(days=10)
    ingest_at(p.project, late, "inst_late_00001")  # a new install, 10 days back
    days = [late.date() + dt.timedelta(days=k) for k in range(-1, 11)]
    assert_rolling_is_brute_force(p.project, days)
    assert_daily_series_is_brute_force(p.project, days[0], days[-1])
    run = run_job("refresh_cohorts")
    assert run.ok and run.details["rolling_days"] == {p.project.slug: 10}
    assert_rolling_is_brute_force(p.project, days)
    assert_daily_series_is_brute_force(p.project, days[0], days[-1])


def test_version_adoption_reads_the_same_from_stored_days_as_from_activity(client):
    p = seeded_project(client, seed=35, days=40)
    end = timezone.now().date()
    start = end - dt.timedelta(days=39)
    before = active.version_adoption(project=p.project, start=start, end=end)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    assert RollingActivity.objects.filter(project=p.project).count() >= 35
    after = active.version_adoption(project=p.project, start=start, end=end)
    assert after == before
    expect = versions_by_day(p.project, start, end)
    for i, label in enumerate(after["labels"]):
        got = {v: s[i] for v, s in after["series"].items() if s[i]}
        assert got == expect.get(label, {}), label


def test_the_purge_drops_rows_of_purged_days_and_later_days_match_what_is_left(client):
    p = seeded_project(client, seed=36, days=60)
    now = timezone.now()
    rolling.refresh_rolling(project=p.project, now=now)
    p.project.retention_days = 40
    p.project.save(update_fields=["retention_days"])
    purge.purge(now=now)
    cutoff = now.date() - dt.timedelta(days=40)
    assert not RollingActivity.objects.filter(project=p.project, day__lt=cutoff).exists()
    days = [cutoff + dt.timedelta(days=k) for k in range(40)]
    assert_rolling_is_brute_force(p.project, days)  # the rows crossing the cutoff are stale
    assert rolling.refresh_rolling(project=p.project, now=now).days == 29
    assert_rolling_is_brute_force(p.project, days)


def test_deleting_an_install_clears_the_rows_and_counts_stay_exact(client):
    p = seeded_project(client, seed=37, days=20)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    install = DailyActivity.objects.filter(project=p.project).first().install_id
    delete_install(project=p.project, install_id=install)
    assert not RollingActivity.objects.filter(project=p.project).exists()
    assert_rolling_is_brute_force(
        p.project, [timezone.now().date() - dt.timedelta(days=k) for k in range(20)]
    )


def test_an_install_seen_after_the_day_keeps_the_last_seen_shortcut_away(client):
    p = seeded_project(client, seed=38, days=10)
    day = timezone.now().date() - dt.timedelta(days=3)
    # No stored rows: days before the newest activity are counted, today's comes from installs.
    assert_rolling_is_brute_force(p.project, [day, timezone.now().date()])
    assert active._seen_after(p.project, day)
    assert not active._seen_after(p.project, timezone.now().date())


def brute_os(project, start, end):
    """Installs per OS from the raw events: each install's OS of a day is that day's last
    non-empty one (what DailyActivity keeps), counted once per OS it had in the range."""
    seen: dict = defaultdict(list)
    for install, ts, os_name in Event.objects.filter(project=project).values_list(
        "install_id", "timestamp", "os"
    ):
        if start <= ts.astimezone(dt.UTC).date() <= end:
            seen[(install, ts.astimezone(dt.UTC).date())].append((ts, os_name))
    pairs = set()
    for (install, _), events in seen.items():
        named = [e for e in events if e[1]]
        pairs.add((install, max(named)[1] if named else ""))
    by_os: dict = defaultdict(int)
    for _, os_name in pairs:
        by_os[os_name or "unknown"] += 1
    return sorted(by_os.items(), key=lambda x: (-x[1], x[0]))


def test_installs_per_os_read_the_folded_pairs_and_match_the_raw_events(client):
    p = seeded_project(client, seed=39, days=40)
    end = timezone.now().date()
    start = end - dt.timedelta(days=29)
    before = active.os_breakdown(project=p.project, start=start, end=end)
    assert before == brute_os(p.project, start, end)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    assert OsActivity.objects.filter(project=p.project).exists()
    assert active.os_breakdown(project=p.project, start=start, end=end) == before
    # The pairs are what is read: a pair no activity row has shows up.
    OsActivity.objects.create(project=p.project, install_id="inst_x", os="plan9", last_day=end)
    assert ("plan9", 1) in active.os_breakdown(project=p.project, start=start, end=end)


def test_a_late_event_with_a_new_os_is_counted_at_once_and_folded_by_the_job(client):
    p = seeded_project(client, seed=40, days=30)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    end = timezone.now().date()
    start = end - dt.timedelta(days=29)
    late = timezone.now() - dt.timedelta(days=12)
    install = DailyActivity.objects.filter(project=p.project).first().install_id
    ingest(
        project=p.project,
        events=[IncomingEvent(install_id=install, name="x", timestamp=late, os="haiku")],
        client_ip="192.0.2.10",
        now=late,
    )
    fold()
    assert ("haiku", 1) in active.os_breakdown(project=p.project, start=start, end=end)
    assert active.os_breakdown(project=p.project, start=start, end=end) == brute_os(
        p.project, start, end
    )
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    assert OsActivity.objects.filter(project=p.project, install_id=install, os="haiku").exists()
    assert active.os_breakdown(project=p.project, start=start, end=end) == brute_os(
        p.project, start, end
    )


def test_the_purge_and_a_deletion_take_their_os_pairs_with_them(client):
    p = seeded_project(client, seed=42, days=60)
    now = timezone.now()
    rolling.refresh_rolling(project=p.project, now=now)
    p.project.retention_days = 40
    p.project.save(update_fields=["retention_days"])
    purge.purge(now=now)
    cutoff = now.date() - dt.timedelta(days=40)
    assert not OsActivity.objects.filter(project=p.project, last_day__lt=cutoff).exists()
    install = OsActivity.objects.filter(project=p.project).first().install_id
    delete_install(project=p.project, install_id=install)
    assert not OsActivity.objects.filter(project=p.project, install_id=install).exists()
    rolling.refresh_rolling(project=p.project, now=now)
    end = now.date()
    for start in (cutoff, end - dt.timedelta(days=6)):
        assert active.os_breakdown(project=p.project, start=start, end=end) == brute_os(
            p.project, start, end
        )


def test_a_first_fill_leaves_both_rollups_analysed(client):
    p = seeded_project(client, seed=43, days=20)
    rolling.refresh_rolling(project=p.project, now=timezone.now())
    pairs = OsActivity.objects.filter(project=p.project).count()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT relname, reltuples FROM pg_class"
                " WHERE relname IN ('telemetry_rollingactivity', 'telemetry_osactivity')"
            )
            stats = dict(cursor.fetchall())
            assert stats["telemetry_osactivity"] == pairs
        else:
            cursor.execute(
                "SELECT tbl, stat FROM sqlite_stat1"
                " WHERE tbl IN ('telemetry_rollingactivity', 'telemetry_osactivity')"
            )
            stats = dict(cursor.fetchall())  # one row per index, each opening with the row count
            assert int(stats["telemetry_osactivity"].split()[0]) == pairs
    assert set(stats) == {"telemetry_rollingactivity", "telemetry_osactivity"}


def test_the_oldest_activity_day_is_found_past_the_first_probe(client):
    p = seeded_project(client, seed=56, installs=3, events=20, days=2)
    other = seeded_project(client, seed=57, installs=3, events=40, days=60)
    today = timezone.now().date()
    assert active.raw_boundary(project=p.project) >= today - dt.timedelta(days=2)
    assert active.raw_boundary(project=other.project) == min(
        DailyActivity.objects.filter(project=other.project).values_list("day", flat=True)
    )
    old = dt.datetime.combine(today - dt.timedelta(days=45), dt.time(9), dt.UTC)
    ingest_at(p.project, old, "inst_old_00001")
    assert active.raw_boundary(project=p.project) == old.date()


def test_a_request_reads_the_oldest_activity_day_once(client):
    p = seeded_project(client, seed=58, days=30)
    today = timezone.now().date()
    with CaptureQueriesContext(connection) as outside:
        active.raw_boundary(project=p.project)
        active.raw_boundary(project=p.project)
    with db.reading(using="default"), CaptureQueriesContext(connection) as inside:
        first = active.raw_boundary(project=p.project)
        active.active_series(project=p.project, interval="week", start=today, end=today)
        assert active.raw_boundary(project=p.project) == first

    def probes(ctx):
        return [q for q in ctx.captured_queries if "min(" in q["sql"].lower()]

    assert len(probes(inside)) * 2 == len(probes(outside)) > 0
