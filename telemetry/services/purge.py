"""The retention purge: raw events, activity rollups and installs older than a project's
retention_days, deleted in small batches after the anonymous aggregates are snapshotted.

The rule: an event is purged when received_at < 00:00 UTC of the cutoff day (the purge's UTC day
minus retention_days); rollups dated before the cutoff day go too. Ingest's window starts at now
minus retention_days, never before the cutoff day, so nothing accepted today is purged today.

Each batch is its own short transaction selecting at most `batch_size` primary keys through an
index ((project, received_at) for events), so ingest never waits behind one long DELETE and a
kill at any point leaves a state that the next run finishes exactly.
"""

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connection, transaction

from telemetry.models import Batch, DailyActivity, Event, Install, PeriodActivity, Project
from telemetry.services import aggregates
from telemetry.services.locks import job_lock
from telemetry.services.stats import day_start

# Measured with bench/purge.py on PostgreSQL (300k events, 2 shared cores): 10k-row batches
# back to back pushed ingest p99 to ~6x; 2k rows with a 50 ms breather kept it near 1.7x.
DEFAULT_BATCH_SIZE = 2_000
DEFAULT_PAUSE = 0.05

# (model, column compared to the cutoff, whether the cutoff is a date or a datetime)
_TARGETS = [
    ("events", Event, "received_at", "datetime"),
    ("daily_activity", DailyActivity, "day", "date"),
    ("installs", Install, "last_seen", "datetime"),
    # Weeks and months that began before the cutoff: a partly purged period is already
    # answered from the snapshots, so its row would only over-count.
    ("period_activity", PeriodActivity, "start", "date"),
    ("batches", Batch, "received_at", "datetime"),
]


@dataclass
class PurgeCounts:
    project: str
    cutoff: dt.date
    summaries: int = 0
    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.deleted.values())


def _cutoff_values(project: Project, now: dt.datetime) -> tuple[dt.date, dict[str, object]]:
    keep_from = aggregates.cutoff_day(project=project, now=now)
    return keep_from, {"date": keep_from, "datetime": day_start(keep_from)}


def expired_counts(*, project: Project, now: dt.datetime) -> PurgeCounts:
    """What a purge would delete now; reads only (the --dry-run)."""
    keep_from, values = _cutoff_values(project, now)
    counts = PurgeCounts(project=project.slug, cutoff=keep_from)
    for label, model, column, kind in _TARGETS:
        counts.deleted[label] = model.objects.filter(
            project=project, **{f"{column}__lt": values[kind]}
        ).count()
    return counts


def _delete_batch(model, project_id: int, column: str, cutoff, batch_size: int) -> int:
    table = model._meta.db_table
    ops = connection.ops
    value = (
        ops.adapt_datetimefield_value(cutoff)
        if isinstance(cutoff, dt.datetime)
        else ops.adapt_datefield_value(cutoff)
    )
    # The inner SELECT walks the (project, <column>) index and stops at batch_size rows, so each
    # statement locks at most batch_size rows, all of them expired (ingest never writes those).
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table}"
            f" WHERE project_id = %s AND {column} < %s LIMIT %s)",
            [project_id, value, batch_size],
        )
        return cursor.rowcount


def purge_project(
    *,
    project: Project,
    now: dt.datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pause: float = DEFAULT_PAUSE,
    progress: Callable[[int], None] | None = None,
) -> PurgeCounts:
    """Snapshot the expiring aggregates, then delete expired rows batch by batch.

    `pause` sleeps between batches to leave the disk to ingest; `progress(n)` is told each
    batch's row count (for a progress bar).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    keep_from, values = _cutoff_values(project, now)
    counts = PurgeCounts(project=project.slug, cutoff=keep_from)
    counts.summaries = aggregates.snapshot_expiring(project=project, now=now)
    # Events first, installs last: an interrupted run never leaves an install whose events
    # or activity are still there to be found by id.
    for label, model, column, kind in _TARGETS:
        total = 0
        while True:
            n = _delete_batch(model, project.pk, column, values[kind], batch_size)
            total += n
            if progress and n:
                progress(n)
            if n < batch_size:
                break
            if pause:
                time.sleep(pause)
        counts.deleted[label] = total
    return counts


def purge(
    *,
    now: dt.datetime,
    projects: list[Project] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pause: float = DEFAULT_PAUSE,
    progress: Callable[[int], None] | None = None,
) -> list[PurgeCounts]:
    """Purge the given projects (all by default) under the purge lock.

    Raises locks.LockBusy when another purge is running: the caller reports it and stops.
    """
    with job_lock("purge"):
        return [
            purge_project(project=p, now=now, batch_size=batch_size, pause=pause, progress=progress)
            for p in (projects if projects is not None else Project.objects.all())
        ]
