"""telemetry.services.cohorts: the retention grid's cells, rebuilt set-based, equal to a count
over raw events, served only while they still hold."""

import datetime as dt

import pytest
from django.utils import timezone

from telemetry.analytics.active import raw_boundary
from telemetry.analytics.periods import period_start
from telemetry.analytics.retention import COHORT_ROLLUP, _rollup_counts, retention
from telemetry.models import CohortActivity, RollupState
from telemetry.services import aggregates, cohorts, purge
from telemetry.services.cohorts import refresh_cohorts, refresh_stale
from telemetry.services.deletion import delete_install
from telemetry.services.demo import seed_demo
from tests.analytics.data import Brute
from tests.factories import fold, ingest_at, make_project

pytestmark = pytest.mark.django_db


def _grid(project, period, n, now):
    return [
        (c.label, c.size, c.retained)
        for c in retention(project=project, period=period, cohorts=n, now=now)
    ]


@pytest.fixture
def seeded():
    project = make_project().project
    now = timezone.now()
    seed_demo(project=project, installs=120, events=3000, days=70, seed=5, now=now)
    return project, now


def test_seed_demo_leaves_cells_equal_to_a_count_over_raw_events(seeded):
    project, now = seeded
    state = RollupState.objects.get(project=project, name=COHORT_ROLLUP)
    assert state.as_of == now.date()
    assert CohortActivity.objects.filter(project=project, period="w").exists()
    brute = Brute(project)
    for period, n, step in (("week", 12, 7), ("day", 30, 1)):
        for c in retention(project=project, period=period, cohorts=n, now=now):
            assert c.retained == [brute.cohort(c.start, step, k) for k in range(len(c.retained))]


def test_reads_serve_the_cells_while_nothing_moved(seeded):
    project, now = seeded
    expected = _grid(project, "week", 12, now)
    # Cells are read, not counted: if they were counted, this change would show.
    CohortActivity.objects.filter(project=project, period="w").update(installs=0)
    assert _grid(project, "week", 12, now) != expected


def test_a_new_event_makes_reads_count_until_the_next_refresh(seeded):
    project, now = seeded
    before = _grid(project, "week", 12, now)
    ingest_at(project, now, "inst_brand_new_1")
    after = _grid(project, "week", 12, now)
    assert after[-1][1] == before[-1][1] + 1  # the newcomer is in this week's cohort at once
    assert [r.project for r in refresh_stale(now=now)] == [project.slug]
    assert _grid(project, "week", 12, now) == after
    assert refresh_stale(now=now) == []  # nothing moved since


def test_within_the_allowed_lag_the_last_cells_are_served(seeded, settings):
    project, now = seeded
    settings.TELEMETRY_COHORT_MAX_LAG_SECONDS = 60
    before = _grid(project, "week", 12, now)
    ingest_at(project, now, "inst_brand_new_2")
    assert _grid(project, "week", 12, now) == before
    later = now + dt.timedelta(seconds=61)
    assert _grid(project, "week", 12, later)[-1][1] == before[-1][1] + 1


def test_deleting_an_install_stops_its_cells_being_served(seeded):
    project, now = seeded
    delete_install(project=project, install_id="demo_5_0000119")
    assert not RollupState.objects.filter(project=project).exists()
    brute = Brute(project)
    for c in retention(project=project, period="week", cohorts=12, now=now):
        assert c.size == brute.cohort(c.start, 7, 0)


def test_refresh_is_idempotent_and_a_new_day_is_recounted(seeded):
    project, now = seeded
    cells = list(
        CohortActivity.objects.filter(project=project)
        .values_list("period", "cohort", "start", "installs")
        .order_by("period", "cohort", "start")
    )
    assert refresh_cohorts(project=project, now=now).cells == len(cells)
    assert (
        list(
            CohortActivity.objects.filter(project=project)
            .values_list("period", "cohort", "start", "installs")
            .order_by("period", "cohort", "start")
        )
        == cells
    )
    tomorrow = now + dt.timedelta(days=1)
    assert [r.project for r in refresh_stale(now=tomorrow)] == [project.slug]
    assert RollupState.objects.get(project=project).as_of == tomorrow.date()


def test_projects_without_events_are_left_alone():
    make_project()
    assert refresh_stale(now=timezone.now()) == []


def _cut(project, now, days):
    """Lower the project's retention to `days` and purge: the first day kept."""
    project.retention_days = days
    project.save(update_fields=["retention_days"])
    purge.purge(now=now)
    return aggregates.cutoff_day(project=project, now=now)


def _served(project, period, n, now) -> bool:
    """Whether the grid's cells come from the cohort rollup (not counted)."""
    step = dt.timedelta(days=7 if period == "week" else 1)
    current = period_start(now.date(), period)
    first, until = current - step * (n - 1), current + step
    return _rollup_counts(project, period, first, until, now) is not None


def test_a_purge_carries_the_cells_and_the_grid_is_what_a_recount_gives(seeded):
    project, now = seeded
    keep_from = _cut(project, now, 30)
    assert not CohortActivity.objects.filter(project=project, start__lt=keep_from).exists()
    assert CohortActivity.objects.filter(project=project, start__gte=keep_from).exists()
    grids = {}
    for period, n in (("week", 12), ("day", 60)):
        assert _served(project, period, n, now), period
        grids[period] = _grid(project, period, n, now)
    refresh_cohorts(project=project, now=now)  # a recount from what the purge left
    for period, n in (("week", 12), ("day", 60)):
        assert _grid(project, period, n, now) == grids[period], period
    assert refresh_stale(now=now) == []


def test_cells_stale_before_the_purge_are_not_carried(seeded):
    project, now = seeded
    ingest_at(project, now, "inst_brand_new_3")  # the cells no longer hold
    _cut(project, now, 30)
    assert not _served(project, "week", 12, now)
    counted = _grid(project, "week", 12, now)
    assert counted[-1][1] >= 1  # the newcomer's cohort
    refresh_cohorts(project=project, now=now)
    assert _served(project, "week", 12, now)
    assert _grid(project, "week", 12, now) == counted


def test_an_event_counted_before_the_carry_leaves_the_grid_to_the_refresh(seeded, monkeypatch):
    project, now = seeded
    oldest_before = raw_boundary(project=project)
    carry = cohorts.carry
    monkeypatch.setattr(cohorts, "carry", lambda **kw: 0)
    keep_from = _cut(project, now, 30)
    ingest_at(project, now - dt.timedelta(days=3), "inst_late_cohort")
    fold()
    assert carry(project=project, oldest_before=oldest_before, keep_from=keep_from) == 0
    assert not _served(project, "week", 12, now)
    assert [r.project for r in refresh_stale(now=now)] == [project.slug]
    assert _served(project, "week", 12, now)
