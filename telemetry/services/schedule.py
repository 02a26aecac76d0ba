"""The scheduled jobs: their names, default beat schedule, and the TaskRun record of each run.

Celery tasks (telemetry/tasks.py) and `manage.py run_scheduled` both go through `run_job`, so a
run looks the same in the admin whichever started it.
"""

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from telemetry.ingest import rollups
from telemetry.models import TaskRun
from telemetry.services import aggregates, cohorts, error_days, partitions, purge, rolling, salts
from telemetry.services.locks import LockBusy

# Rollups are caught up within a minute of an event's commit (CONTRACTS A1): a fold every 10 s
# leaves room for a busy worker, and readers fold before they read anyway (analytics.db).
FOLD_EVERY_SECONDS = 10


@dataclass
class JobResult:
    rows: int
    details: dict


def purge_result(results: list[purge.PurgeCounts]) -> JobResult:
    return JobResult(
        sum(r.rows for r in results),
        {
            r.project: {"cutoff": r.cutoff.isoformat(), "summaries": r.summaries, **r.deleted}
            for r in results
        },
    )


def _purge(now: dt.datetime) -> JobResult:
    try:
        return purge_result(purge.purge(now=now))
    except LockBusy:
        # Not an error: the running purge does the work; this run says so and stops.
        return JobResult(0, {"skipped": "another purge is running"})


def _rotate_salts(now: dt.datetime) -> JobResult:
    r = salts.rotate_salts(now=now)
    return JobResult(
        r.rows, {"created": [d.isoformat() for d in r.created], "destroyed": r.destroyed}
    )


def _refresh(now: dt.datetime) -> JobResult:
    written = aggregates.refresh_aggregates(now=now)
    return JobResult(sum(written.values()), written)


def _partitions(now: dt.datetime) -> JobResult:
    if not partitions.partitioned():
        return JobResult(0, {"skipped": "this database keeps events in one table"})
    created = partitions.ensure_ahead(now=now)
    details = {"created": [d.isoformat() for d in created]}
    if orphans := partitions.drop_orphan_holds():
        details["dropped_held_tables"] = orphans  # an import that died left them
    return JobResult(len(created), details)


def _analyze_events(now: dt.datetime) -> JobResult:
    if not partitions.partitioned():
        return JobResult(0, {"skipped": "autovacuum analyses this database's tables"})
    return JobResult(0, {"analyzed": partitions.analyze_parent()})


def _fold_rollups(now: dt.datetime) -> JobResult:
    return JobResult(rollups.fold_rollups(), {})


def _refresh_cohorts(now: dt.datetime) -> JobResult:
    done = cohorts.refresh_stale(now=now)
    days = rolling.refresh_stale(now=now)
    errored = error_days.refresh_stale(now=now)
    details = {r.project: r.cells for r in done}
    if any(r.days for r in days):
        details["rolling_days"] = {r.project: r.days for r in days if r.days}
    if any(r.periods for r in days):
        details["closed_periods"] = {r.project: r.periods for r in days if r.periods}
    if errored:
        details["error_days"] = {r.project: r.days for r in errored}
    rows = sum(r.cells for r in done) + sum(r.days + r.periods for r in days)
    rows += sum(r.days for r in errored)
    return JobResult(rows, details)


@dataclass(frozen=True)
class Job:
    name: str
    task: str  # the Celery task name beat sends
    run: Callable[[dt.datetime], JobResult]
    crontab: dict  # CrontabSchedule fields, UTC; empty for a job run every `every_seconds`
    description: str
    every_seconds: int = 0


JOBS = {
    j.name: j
    for j in [
        Job(
            "purge",
            "telemetry.tasks.purge_expired",
            _purge,
            {"minute": "0", "hour": "2"},
            "Delete raw events, activity and installs past each project's retention_days.",
        ),
        Job(
            "rotate_salts",
            "telemetry.tasks.rotate_salts",
            _rotate_salts,
            {"minute": "5", "hour": "*"},
            "Create today's and tomorrow's IP salts, destroy salts older than 48 hours.",
        ),
        Job(
            "refresh_aggregates",
            "telemetry.tasks.refresh_aggregates",
            _refresh,
            {"minute": "30", "hour": "0"},
            "Rewrite daily summaries and weekly cohorts for closed days.",
        ),
        Job(
            "create_partitions",
            "telemetry.tasks.create_partitions",
            _partitions,
            {"minute": "15", "hour": "*"},
            "Create event and activity partitions, yesterday to a week ahead, and drop the tables"
            " an import that died held its rows in (PostgreSQL).",
        ),
        Job(
            "analyze_events",
            "telemetry.tasks.analyze_events",
            _analyze_events,
            {"minute": "30", "hour": "2"},
            "Refresh the partitioned tables' planner statistics after the purge.",
        ),
        Job(
            "fold_rollups",
            "telemetry.tasks.fold_rollups",
            _fold_rollups,
            {},
            "Fold the rollup rows queued by ingest into installs, activity and daily counts.",
            every_seconds=FOLD_EVERY_SECONDS,
        ),
        Job(
            "refresh_cohorts",
            "telemetry.tasks.refresh_cohorts",
            _refresh_cohorts,
            {"minute": "*", "hour": "*"},
            "Recount the retention grid's cells, the overview's closed days and periods and the"
            " errors page's closed days of projects with new events since the last run.",
        ),
    ]
}


@contextlib.contextmanager
def record_run(task: str) -> Iterator[TaskRun]:
    """Record one run of `task`: a TaskRun row at start, filled in (rows, details, error) at end.

    The block sets run.rows and run.details; an exception is recorded and re-raised.
    """
    run = TaskRun.objects.create(task=task, started_at=timezone.now())
    t0 = time.monotonic()
    try:
        yield run
    except Exception as exc:
        run.ok = False
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        _finish(run, t0)
        raise
    run.ok = True
    _finish(run, t0)


def run_job(name: str, *, now: dt.datetime | None = None) -> TaskRun:
    """Run one job now in this process, recording a TaskRun; re-raises the job's error."""
    job = JOBS[name]
    now = now or timezone.now()
    with record_run(name) as run:
        result = job.run(now)
        run.rows, run.details = result.rows, result.details
    return run


def _finish(run: TaskRun, t0: float) -> None:
    run.finished_at = timezone.now()
    run.duration_ms = int((time.monotonic() - t0) * 1000)
    run.save()


def periodic_task_name(job: Job) -> str:
    return f"telemetry: {job.name.replace('_', ' ')}"


def ensure_default_schedule(*, using: str = "default") -> list[str]:
    """Create the beat rows that are missing; existing rows (operator edits) are left alone.

    Returns the names created. An operator who wants a job off disables it in the admin;
    a deleted row comes back on the next migrate.
    """
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    created = []
    with transaction.atomic(using=using):
        for job in JOBS.values():
            name = periodic_task_name(job)
            if PeriodicTask.objects.using(using).filter(name=name).exists():
                continue
            when: dict = {}
            if job.every_seconds:
                when["interval"], _ = IntervalSchedule.objects.using(using).get_or_create(
                    every=job.every_seconds, period=IntervalSchedule.SECONDS
                )
            else:
                when["crontab"], _ = CrontabSchedule.objects.using(using).get_or_create(
                    day_of_week="*",
                    day_of_month="*",
                    month_of_year="*",
                    timezone="UTC",
                    **job.crontab,
                )
            PeriodicTask.objects.using(using).create(
                name=name, task=job.task, description=job.description, **when
            )
            created.append(name)
    return created
