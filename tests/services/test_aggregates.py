"""telemetry.services.aggregates: summaries of closed days, refreshed or snapshotted."""

import datetime as dt

import pytest

from telemetry.models import CohortSummary, DailySummary
from telemetry.services.aggregates import refresh_aggregates, snapshot_expiring
from tests.factories import ingest_at, make_project

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)


def test_refresh_summarises_closed_days_but_not_today():
    p = make_project(retention_days=30).project
    ingest_at(p, dt.datetime(2025, 6, 10, 9, tzinfo=dt.UTC), "inst_aaaa0001", n=2)
    ingest_at(p, dt.datetime(2025, 6, 11, 9, tzinfo=dt.UTC), "inst_aaaa0001")
    ingest_at(p, dt.datetime(2025, 6, 11, 9, tzinfo=dt.UTC), "inst_bbbb0002")
    ingest_at(p, NOW, "inst_cccc0003")
    refresh_aggregates(now=NOW)
    rows = {
        s.day.isoformat(): (s.active_installs, s.new_installs, s.events)
        for s in DailySummary.objects.all()
    }
    assert rows == {"2025-06-10": (1, 1, 2), "2025-06-11": (2, 1, 2)}
    week = CohortSummary.objects.get(week_start=dt.date(2025, 6, 9))
    assert (week.size, week.retained) == (3, [3])


def test_refresh_rewrites_a_day_that_got_late_events():
    p = make_project(retention_days=30).project
    day = dt.datetime(2025, 6, 10, 9, tzinfo=dt.UTC)
    ingest_at(p, day, "inst_aaaa0001")
    refresh_aggregates(now=NOW)
    ingest_at(p, day, "inst_bbbb0002")
    refresh_aggregates(now=NOW)
    assert DailySummary.objects.get(day=day.date()).active_installs == 2


def test_refresh_leaves_days_past_retention_to_the_purge_snapshot():
    p = make_project(retention_days=30).project
    DailySummary.objects.create(project=p, day=dt.date(2025, 5, 1), active_installs=9)
    ingest_at(p, dt.datetime(2025, 5, 1, 9, tzinfo=dt.UTC), "inst_aaaa0001")
    refresh_aggregates(now=NOW)
    assert DailySummary.objects.get(day=dt.date(2025, 5, 1)).active_installs == 9


def test_snapshot_never_overwrites_an_existing_summary():
    p = make_project(retention_days=30).project
    ingest_at(p, dt.datetime(2025, 5, 1, 9, tzinfo=dt.UTC), "inst_aaaa0001")
    ingest_at(p, dt.datetime(2025, 5, 2, 9, tzinfo=dt.UTC), "inst_aaaa0001")
    DailySummary.objects.create(project=p, day=dt.date(2025, 5, 1), active_installs=9)
    assert snapshot_expiring(project=p, now=NOW) == 2  # May 2 and the cohort of April 28
    assert DailySummary.objects.get(day=dt.date(2025, 5, 1)).active_installs == 9
    assert DailySummary.objects.get(day=dt.date(2025, 5, 2)).active_installs == 1
    assert snapshot_expiring(project=p, now=NOW) == 0
