"""Weekly and daily cohort grids: rollups against brute force, and the purged-week fallback."""

import datetime as dt

import pytest
from django.utils import timezone

from telemetry.analytics.retention import retention
from telemetry.models import CohortSummary
from tests.analytics.data import Brute, seeded_project

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("period", "n", "step", "installs", "days"), [("week", 12, 7, 40, 80), ("day", 30, 1, 300, 28)]
)
def test_cohort_grid_matches_a_count_over_raw_events(client, period, n, step, installs, days):
    p = seeded_project(client, seed=13, installs=installs, events=900, days=days)
    brute = Brute(p.project)
    now = timezone.now()
    grid = retention(project=p.project, period=period, cohorts=n, now=now)
    assert len(grid) == n
    assert [len(c.retained) for c in grid] == list(range(n, 0, -1))
    assert grid[-1].start <= now.date() < grid[-1].start + dt.timedelta(days=step)
    assert sum(c.size for c in grid) > 0
    for c in grid:
        assert c.size == brute.cohort(c.start, step, 0)
        assert c.retained[0] == c.size
        for k, n_k in enumerate(c.retained):
            assert n_k == brute.cohort(c.start, step, k), (c.label, k)


def test_cohort_count_is_clamped():
    from telemetry.models import Project

    project = Project.objects.create(slug="empty", name="empty")
    grid = retention(project=project, period="week", cohorts=10_000, now=timezone.now())
    assert len(grid) == 52
    assert all(c.size == 0 and set(c.retained) == {0} for c in grid)


def test_purged_cohorts_use_the_snapshot_then_the_rollups(client):
    p = seeded_project(client, seed=17, days=6)
    today = timezone.now().date()
    monday = today - dt.timedelta(days=today.weekday())
    old = monday - dt.timedelta(weeks=3)
    CohortSummary.objects.create(project=p.project, week_start=old, size=9, retained=[9, 4])
    grid = retention(project=p.project, period="week", cohorts=4, now=timezone.now())
    assert grid[0].label == f"{old.isocalendar()[0]}-W{old.isocalendar()[1]:02d}"
    assert grid[0].size == 9
    # Weeks after the snapshot come from the rollups: none of the snapshot's installs remain.
    assert grid[0].retained == [9, 4, 0, 0]
    assert grid[0].percentages() == [100.0, 44.4, 0.0, 0.0]
