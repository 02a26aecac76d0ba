"""telemetry.services.stats: DAU/WAU/MAU and weekly cohorts from the rollups."""

import datetime as dt

import pytest

from telemetry.services.stats import active_installs, cohorts
from tests.factories import ingest_at, make_project

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)  # Sunday


def test_active_installs_count_distinct_installs_per_window():
    p = make_project().project
    ingest_at(p, NOW, "inst_today001", n=3)
    ingest_at(p, NOW - dt.timedelta(days=3), "inst_today001")
    ingest_at(p, NOW - dt.timedelta(days=3), "inst_week0001")
    ingest_at(p, NOW - dt.timedelta(days=20), "inst_month001")
    ingest_at(p, NOW - dt.timedelta(days=40), "inst_older001")
    a = active_installs(project=p, now=NOW)
    assert (a.dau, a.wau, a.mau) == (1, 2, 3)


def test_cohorts_count_who_came_back_each_week():
    p = make_project().project
    w0 = dt.datetime(2025, 6, 2, 9, tzinfo=dt.UTC)
    ingest_at(p, w0, "inst_a0000001")
    ingest_at(p, w0, "inst_b0000001")
    ingest_at(p, w0 + dt.timedelta(days=8), "inst_a0000001")
    ingest_at(p, w0 + dt.timedelta(days=7), "inst_c0000001")
    grid = cohorts(
        project=p, first_week=dt.date(2025, 6, 2), last_week=dt.date(2025, 6, 9), now=NOW
    )
    assert [(c.week_start, c.size, c.retained) for c in grid] == [
        (dt.date(2025, 6, 2), 2, [2, 1]),
        (dt.date(2025, 6, 9), 1, [1]),
    ]
