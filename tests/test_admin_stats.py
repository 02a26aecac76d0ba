"""The admin presents WAU and retention from the analytics module, and its big lists never
count or DISTINCT the whole events table."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from telemetry import admin_stats
from telemetry.analytics import active, retention
from telemetry.analytics.periods import WEEK, period_start
from telemetry.services.demo import seed_demo
from tests.factories import make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = get_user_model().objects.create_superuser("root", password="pw-123456789")
    client.force_login(user)
    return client


@pytest.fixture
def seeded():
    project = make_project(slug="seeded").project
    now = timezone.now()
    seed_demo(project=project, installs=150, events=4000, days=90, seed=9, now=now)
    return project, now


def _weekly(project, now):
    week = period_start(now.date(), WEEK)
    series = active.active_series(
        project=project, interval=WEEK, start=week - timezone.timedelta(days=7), end=now.date()
    )
    return [p.active_installs for p in series]


def test_project_list_shows_wau_of_this_and_last_week_and_events_today(admin_client, seeded):
    project, now = seeded
    last_week, this_week = _weekly(project, now)
    events_today = active.event_counts(project=project, start=now.date(), end=now.date())
    r = admin_client.get("/admin/telemetry/project/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "WAU this week" in html and "WAU last week" in html and "Events today" in html
    row = re.search(r"<tr[^>]*>.*?seeded.*?</tr>", html, re.S).group(0)
    cells = re.findall(r'<td class="field-(\w+)[^"]*">([^<]*)</td>', row)
    shown = dict(cells)
    assert int(shown["wau_this_week"]) == this_week > 0
    assert int(shown["wau_last_week"]) == last_week > 0
    assert int(shown["events_today"].replace(",", "")) == sum(events_today.values())


def test_project_page_shows_a_12_week_sparkline_and_the_12x12_retention(admin_client, seeded):
    project, now = seeded
    r = admin_client.get(f"/admin/telemetry/project/{project.pk}/change/")
    assert r.status_code == 200
    html = r.content.decode()
    assert 'id="wau-sparkline"' in html
    points = re.search(r'points="([^"]+)"', html).group(1).split()
    assert len(points) == 12
    grid = retention.retention(project=project, period=WEEK, cohorts=12, now=now)
    for cohort in grid:
        row = re.search(rf'<tr data-cohort="{cohort.label}">(.*?)</tr>', html, re.S).group(1)
        assert [int(n) for n in re.findall(r'data-n="(\d+)"', row)] == cohort.retained


def test_admin_index_has_a_telemetry_overview(admin_client, seeded):
    project, now = seeded
    this_week = _weekly(project, now)[-1]
    r = admin_client.get("/admin/")
    html = r.content.decode()
    assert 'id="telemetry-overview"' in html
    assert re.search(r'id="ov-wau">(\d+)', html).group(1) == str(this_week)
    assert re.search(r'id="ov-projects">(\d+)', html).group(1) == "1"


@pytest.mark.parametrize(
    "url",
    [
        "/admin/telemetry/event/",
        "/admin/telemetry/event/?p=3",
        "/admin/telemetry/event/?name=command.run",
        "/admin/telemetry/install/",
        "/admin/telemetry/dailyactivity/",
    ],
)
def test_big_lists_never_count_or_distinct_a_whole_table(admin_client, seeded, url, monkeypatch):
    monkeypatch.setattr(admin_stats, "EXACT_COUNT_CAP", 50)
    with CaptureQueriesContext(connection) as queries:
        r = admin_client.get(url)
    assert r.status_code == 200
    table = re.search(r"telemetry/(\w+)/", url).group(1)
    for q in queries.captured_queries:
        sql = q["sql"]
        if f'"telemetry_{table}"' not in sql:
            continue
        if table != "install":  # installs are ~1 % of events: DISTINCT os there is cheap
            assert "DISTINCT" not in sql.upper(), sql
        if connection.vendor == "postgresql" and "COUNT(" in sql.upper():
            assert "LIMIT 51" in sql, sql


def test_estimated_count_is_exact_below_the_cap(seeded):
    from telemetry.models import Install

    qs = Install.objects.order_by("-pk")
    assert admin_stats.EstimatedCountPaginator(qs, 100).count == qs.count() == 150
