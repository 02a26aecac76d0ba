"""Active/new installs and events per period, rolling DAU/WAU/MAU: rollups against brute force."""

import datetime as dt
import random

import pytest
from django.utils import timezone

from telemetry.analytics import active
from telemetry.analytics.periods import next_period
from telemetry.models import CohortSummary, DailyActivity, DailySummary, Install
from telemetry.services import purge
from tests.analytics.data import Brute, random_events, seeded_project, send

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


@pytest.mark.parametrize("interval", ["day", "week", "month"])
def test_calendar_series_match_a_count_over_raw_events(client, interval):
    p = seeded_project(client, seed=11)
    brute = Brute(p.project)
    end = timezone.now().date()
    start = end - dt.timedelta(days=75)
    series = active.active_series(project=p.project, interval=interval, start=start, end=end)
    assert series[0].start <= start and series[-1].start <= end
    assert sum(s.events for s in series) == len(brute.rows)
    for s in series:
        last = next_period(s.start, interval) - dt.timedelta(days=1)
        assert s.active_installs == brute.active(s.start, last), s.label
        assert s.new_installs == brute.new(s.start, last), s.label
        assert s.events == brute.events(s.start, last), s.label


def test_week_labels_are_iso_weeks_from_monday():
    from telemetry.analytics.periods import label, period_start

    assert label(period_start(dt.date(2025, 12, 31), "week"), "week") == "2026-W01"
    assert period_start(dt.date(2026, 11, 22), "week") == dt.date(2026, 11, 16)
    assert label(dt.date(2020, 12, 28), "week") == "2020-W53"


@pytest.mark.parametrize("days_ago", [0, 3, 20])
def test_rolling_dau_wau_mau_match_brute_force(client, days_ago):
    p = seeded_project(client, seed=5)
    brute = Brute(p.project)
    day = timezone.now().date() - dt.timedelta(days=days_ago)
    r = active.rolling(project=p.project, day=day)
    assert r.dau == brute.active(day, day)
    assert r.wau == brute.active(day - dt.timedelta(days=6), day)
    assert r.mau == brute.active(day - dt.timedelta(days=29), day)
    assert r.mau >= r.wau >= r.dau
    assert r.stickiness == (round(r.dau / r.mau, 4) if r.mau else None)


def test_periods_without_activity_are_zero_filled(client):
    p = seeded_project(client, seed=3, days=5)
    end = timezone.now().date()
    series = active.active_series(
        project=p.project, interval="day", start=end - dt.timedelta(days=20), end=end
    )
    assert len(series) == 21
    assert all(s.active_installs == 0 and s.events == 0 for s in series[:14])


def test_purged_days_and_weeks_fall_back_to_the_anonymous_snapshots(client):
    p = seeded_project(client, seed=9, days=10)
    project = p.project
    today = timezone.now().date()
    monday = today - dt.timedelta(days=today.weekday())
    old_week = monday - dt.timedelta(weeks=8)
    # Two purged weeks: cohorts of 5 and 3 installs, 2 of the first still active a week later.
    CohortSummary.objects.create(project=project, week_start=old_week, size=5, retained=[5, 2, 0])
    CohortSummary.objects.create(
        project=project, week_start=old_week + dt.timedelta(weeks=1), size=3, retained=[3, 1]
    )
    for offset, (act, new, ev) in enumerate([(4, 4, 40), (2, 1, 9)]):
        DailySummary.objects.create(
            project=project,
            day=old_week + dt.timedelta(days=offset),
            active_installs=act,
            new_installs=new,
            events=ev,
        )
    DailySummary.objects.create(
        project=project, day=old_week + dt.timedelta(days=7), active_installs=5, new_installs=3
    )
    days = active.active_series(
        project=project, interval="day", start=old_week, end=old_week + dt.timedelta(days=1)
    )
    assert [(d.active_installs, d.new_installs, d.events) for d in days] == [
        (4, 4, 40),
        (2, 1, 9),
    ]
    weeks = active.active_series(
        project=project, interval="week", start=old_week, end=old_week + dt.timedelta(days=7)
    )
    assert [(w.active_installs, w.new_installs, w.events) for w in weeks] == [
        (5, 5, 49),
        (2 + 3, 3, 0),
    ]
    months = active.active_series(project=project, interval="month", start=old_week, end=old_week)
    assert months[0].active_installs is None  # cannot be rebuilt from anonymous totals


@pytest.mark.parametrize("interval", ["day", "week", "month"])
def test_after_a_real_purge_new_installs_and_events_are_what_they_were(client, interval):
    # Installs seen only in the purged days are deleted with them; the days' new installs must
    # come from the purge's snapshot, not from the installs that survived (it showed 11,636 of
    # 29,657 at 10M events, bench/RESULTS.md session 7).
    p = seeded_project(client, seed=23, installs=30, events=500, days=60)
    now = timezone.now()
    early = random_events(random.Random(24), installs=12, events=120, days=20, now=now - 40 * DAY)
    send(client, p.ingest_key, early)
    before = Brute(p.project)
    start, end = now.date() - 59 * DAY, now.date()
    p.project.retention_days = 30
    p.project.save()
    counts = purge.purge_project(project=p.project, now=now)
    assert counts.deleted["installs"] >= 10  # the early-only installs went
    series = active.active_series(project=p.project, interval=interval, start=start, end=end)
    for s in series:
        last = next_period(s.start, interval) - DAY
        expected = (before.new(s.start, last), before.events(s.start, last))
        assert (s.new_installs, s.events) == expected, s.label


def test_version_adoption_and_os_breakdown_count_distinct_installs(client):
    p = seeded_project(client, seed=21)
    end = timezone.now().date()
    start = end - dt.timedelta(days=69)
    rows = DailyActivity.objects.filter(project=p.project)
    by_os: dict[str, set] = {}
    for r in rows:
        by_os.setdefault(r.os, set()).add(r.install_id)
    assert active.os_breakdown(project=p.project, start=start, end=end) == sorted(
        ((os, len(ids)) for os, ids in by_os.items()), key=lambda x: (-x[1], x[0])
    )
    adoption = active.version_adoption(project=p.project, start=start, end=end)
    assert len(adoption["labels"]) == 70
    day = end.isoformat()
    i = adoption["labels"].index(day)
    expect = {}
    for r in rows.filter(day=end):
        expect[r.app_version] = expect.get(r.app_version, 0) + 1
    assert {v: s[i] for v, s in adoption["series"].items() if s[i]} == expect
    assert Install.objects.filter(project=p.project).count() <= 25
