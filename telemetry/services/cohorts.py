"""The cohort-by-period rollup (CohortActivity): rebuilt set-based from Install and the activity
rollups, so the retention grid reads one row per cell instead of joining every install.

Idempotent: `refresh_cohorts` replaces a project's cells in one transaction; run it after bulk
writes (seed_demo, purge, deletions) and from the `refresh_cohorts` beat job for projects whose
rollups moved since their last rebuild.
"""

import datetime as dt
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction

from telemetry.analytics.active import raw_boundary
from telemetry.analytics.periods import DAY, WEEK, period_start, today
from telemetry.analytics.retention import (
    COHORT_ROLLUP,
    MAX_COHORTS,
    counts_query,
    event_totals,
    fingerprint,
    fingerprint_of,
)
from telemetry.ingest import rollups
from telemetry.models import CohortActivity, Project, RollupState


@dataclass
class Refreshed:
    project: str
    cells: int


def _window(period: str, now: dt.datetime) -> tuple[dt.date, dt.date]:
    """[first, until) of the cohorts any retention request can ask for."""
    step = dt.timedelta(days=7 if period == WEEK else 1)
    current = period_start(today(now), period)
    return current - step * (MAX_COHORTS[period] - 1), current + step


def refresh_cohorts(*, project: Project, now: dt.datetime) -> Refreshed:
    """Recount every cell of the last 52 weekly and 90 daily cohorts of `project`."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                RollupState.objects.get_or_create(
                    project=project,
                    name=COHORT_ROLLUP,
                    defaults={"fingerprint": "", "as_of": today(now), "refreshed_at": now},
                )
        except IntegrityError:
            pass  # created by a concurrent refresh; the lock below orders us after it
        # Row lock on the state: concurrent refreshes of one project run one after the other.
        state = RollupState.objects.select_for_update().get(project=project, name=COHORT_ROLLUP)
        current = fingerprint(project=project)
        CohortActivity.objects.filter(project=project).delete()
        cells = 0
        with connection.cursor() as cursor:
            for period, kind in ((WEEK, CohortActivity.WEEK), (DAY, CohortActivity.DAY)):
                first, until = _window(period, now)
                sql, params = counts_query(project=project, period=period, first=first, until=until)
                cursor.execute(
                    "INSERT INTO telemetry_cohortactivity"
                    " (project_id, period, cohort, start, installs)"
                    f" SELECT %s, %s, x.c, x.p, x.n FROM ({sql}) x",
                    [project.pk, kind, *params],
                )
                cells += max(cursor.rowcount, 0)
        state.fingerprint = current
        state.as_of = today(now)
        state.refreshed_at = now
        state.save(update_fields=["fingerprint", "as_of", "refreshed_at"])
    return Refreshed(project=project.slug, cells=cells)


def carry(*, project: Project, oldest_before: dt.date | None, keep_from: dt.date) -> int:
    """After a purge that kept days from `keep_from` on and moved the oldest activity day on
    from `oldest_before`: if the cells were current before it, drop those of periods before
    `keep_from` and give the rest the new fingerprint, instead of leaving the whole grid to be
    counted by readers until the next refresh. Returns the cells dropped.

    A recount would find exactly that: the purge deletes the activity and period rows before
    `keep_from` and the installs last seen before it, and a cell of a later period counts
    installs active in it, whose first day and whose rows stay. (At 10M events, readers
    counting the grid after a purge took the retention page to ~625 ms until the job ran:
    bench/RESULTS.md, session 8.) The state row is locked as a refresh locks it, and both
    fingerprints come from one read of the event totals: an event counted in between leaves the
    grid to the refresh."""
    with transaction.atomic():
        state = (
            RollupState.objects.select_for_update()
            .filter(project=project, name=COHORT_ROLLUP)
            .first()
        )
        oldest = raw_boundary(project=project)
        if state is None or oldest_before is None or oldest is None or oldest <= oldest_before:
            return 0
        totals = event_totals(project=project)
        if state.fingerprint != fingerprint_of(totals, oldest_before):
            return 0
        dropped, _ = CohortActivity.objects.filter(project=project, start__lt=keep_from).delete()
        state.fingerprint = fingerprint_of(totals, oldest)
        state.save(update_fields=["fingerprint"])
    return dropped


def invalidate(*, project: Project) -> None:
    """Stop serving the project's cells until the next refresh (after deleting data)."""
    RollupState.objects.filter(project=project, name=COHORT_ROLLUP).delete()


def refresh_stale(*, now: dt.datetime) -> list[Refreshed]:
    """Refresh the projects whose cells no longer match their rollups (or a new day began)."""
    rollups.fold_rollups()  # count the events stored up to now, not only those folded
    states = {s.project_id: s for s in RollupState.objects.filter(name=COHORT_ROLLUP)}
    done = []
    for project in Project.objects.all():
        state = states.get(project.pk)
        current = fingerprint(project=project)
        if state is not None and state.as_of == today(now) and state.fingerprint == current:
            continue
        if state is None and current.startswith("0:"):
            continue  # never had an event: nothing to count
        done.append(refresh_cohorts(project=project, now=now))
    return done
