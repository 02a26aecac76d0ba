"""The retention purge: raw events, activity rollups and installs dated before a project's
retention window, removed after the anonymous aggregates are snapshotted.

On PostgreSQL events live in daily partitions (telemetry.services.partitions): a day that has
expired for every project with rows in it is detached and dropped whole. Only the remainder a
drop cannot take (a day one project keeps and another has expired, such as a 7-day project
beside 90-day ones) is deleted in batches, like the rollup tables. Retention counts whole UTC
days: the first day kept is `today - retention_days`, by the event's own timestamp, which is the
partition key; ingest refuses timestamps older than `now - retention_days`, so nothing accepted
today is purged today. A kill at any point leaves a state that the next run finishes exactly.

A drop reads no row of the day it drops: the projects in a day come from an index walk
(partitions.projects_in) and its rows are reported from the daily rollups, so the work grows
with the days purged, not their rows.
"""

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Sum

from telemetry.analytics import active
from telemetry.ingest import rollups
from telemetry.models import (
    Batch,
    ClosedPeriod,
    CohortActivity,
    DailyActivity,
    DailyCount,
    DailySummary,
    ErrorDay,
    Event,
    Install,
    OsActivity,
    PeriodActivity,
    Project,
    RollingActivity,
)
from telemetry.services import aggregates, cohorts, maintenance, partitions, rolling
from telemetry.services.locks import job_lock
from telemetry.services.stats import day_start

# Batches of rollup rows (and of the events a partition drop cannot take). Expired rows are
# never written by ingest, so a batch only competes with ingest for the disk.
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_PAUSE = 0.0
# Expired partitions dropped per transaction (one commit, one brief lock on the parent each).
DROP_CHUNK = 16

# (label, model, column compared to the cutoff, whether the cutoff is a date or a datetime)
_TARGETS = [
    ("events", Event, "timestamp", "datetime"),
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


def _delete_batch(table: str, where: str, params: list, batch_size: int) -> int:
    # The inner SELECT stops at batch_size rows, so each statement locks at most batch_size
    # rows, all of them expired (ingest never writes those).
    key = "ctid" if connection.vendor == "postgresql" else "rowid"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table}"
            f" WHERE {where} LIMIT %s)",
            [*params, batch_size],
        )
        return cursor.rowcount


def _delete_all(
    table: str,
    where: str,
    params: list,
    *,
    batch_size: int,
    pause: float,
    progress: Callable[[int], None] | None,
) -> int:
    total = 0
    while True:
        n = _delete_batch(table, where, params, batch_size)
        total += n
        if progress and n:
            progress(n)
        if n < batch_size:
            return total
        if pause:
            time.sleep(pause)


def _rows_by_rollups(
    label: str, keep_from: dict[int, dt.date], before: dt.date
) -> dict[tuple[int, dt.date], int]:
    """{(project, day): rows} of `label` before `before`, as the daily rollups count them.

    A dropped day is reported from these instead of counted: events from DailyCount (exact for
    what ingest stored), activity from the day's DailySummary (the snapshot has just written any
    missing one). They keep counting an install deleted on request since, as the charts do.
    """
    if label == "events":
        rows = (
            DailyCount.objects.filter(project_id__in=keep_from, day__lt=before)
            .values("project_id", "day")
            .annotate(n=Sum("events"))
            .values_list("project_id", "day", "n")
        )
    else:
        rows = DailySummary.objects.filter(project_id__in=keep_from, day__lt=before).values_list(
            "project_id", "day", "active_installs"
        )
    return {(p, day): n for p, day, n in rows}


def _purge_partitions(
    keep_from: dict[int, dt.date],
    counts: dict[int, PurgeCounts],
    *,
    batch_size: int,
    pause: float,
    progress: Callable[[int], None] | None,
    parent: str,
    label: str,
    empty_before: dt.date,
) -> set[str]:
    """Drop each daily partition of `parent` that every present project has expired; delete
    the remainder. Counts go to `label`.

    `keep_from` holds the first kept day of the projects being purged (already snapshotted);
    a partition that also holds rows of a project outside it is never dropped. An empty one
    is dropped when it is dated before `empty_before`, a day no project accepts rows for any
    more: days made ahead that stayed quiet would otherwise pile up for ever.
    """
    latest = max(keep_from.values())
    names = {day: name for day, name in partitions.existing(parent=parent).items() if day < latest}
    present = partitions.projects_in(list(names.values()))
    # Read after the walk: a project whose rows it found was committed before them, so an id
    # missing here is a project deleted since. Events have no foreign key (migration 0014):
    # rows stored while their project was being deleted go with the day, or are deleted.
    existing = set(Project.objects.values_list("pk", flat=True))
    reported = _rows_by_rollups(label, keep_from, latest)
    touched = set()
    dropping = []
    for day, name in sorted(names.items()):
        if not present[name]:
            if day < empty_before:
                dropping.append(name)
            continue
        expired = [p for p in present[name] if p in keep_from and day < keep_from[p]]
        gone = present[name] - existing
        if len(expired) + len(gone) == len(present[name]):
            # A project the rollups do not know on this day (rows written around ingest) is
            # counted, so the report never leaves out a row it drops.
            rows = {
                p: reported[(p, day)] if (p, day) in reported else partitions.count_rows(name, p)
                for p in expired
            }
            for p, n in rows.items():
                counts[p].deleted[label] += n
            dropping.append(name)
            if progress:
                progress(sum(rows.values()))
        else:
            if expired or gone:
                touched.add(name)
            for p in gone:
                _delete_all(
                    name, "project_id = %s", [p], batch_size=batch_size, pause=pause, progress=None
                )
            for p in expired:
                counts[p].deleted[label] += _delete_all(
                    name,
                    "project_id = %s",
                    [p],
                    batch_size=batch_size,
                    pause=pause,
                    progress=progress,
                )
    partitions.drop_many(dropping, chunk=DROP_CHUNK, pause=pause)
    return touched


def _purge_rows(
    project: Project,
    now: dt.datetime,
    counts: PurgeCounts,
    *,
    labels: set[str],
    batch_size: int,
    pause: float,
    progress: Callable[[int], None] | None,
) -> None:
    _keep_from, values = _cutoff_values(project, now)
    ops = connection.ops
    # Events first, installs last: an interrupted run never leaves an install whose events
    # or activity are still there to be found by id.
    for label, model, column, kind in _TARGETS:
        if label not in labels:
            continue
        value = (
            ops.adapt_datetimefield_value(values[kind])
            if kind == "datetime"
            else ops.adapt_datefield_value(values[kind])
        )
        counts.deleted[label] = counts.deleted.get(label, 0) + _delete_all(
            model._meta.db_table,
            f"project_id = %s AND {column} < %s",
            [project.pk, value],
            batch_size=batch_size,
            pause=pause,
            progress=progress,
        )


def _analyze(counts: list[PurgeCounts], touched: set[str], *, partitioned: set[str]) -> None:
    """Every bulk write leaves the database ready to plan (STYLE 16), and to read.

    Dropped partitions leave the others' statistics as they were; the tables and partitions
    rows were deleted from are vacuumed and analysed here (outside a transaction; inside one,
    analysed only). Their dead rows and cleared visibility map made the installs' and weekly
    activity counts read the heap: the overview API at 10M events took 146 ms after a purge
    and ~50 ms once vacuumed (bench/RESULTS.md, session 7), and 18 % dead installs do not wake
    autovacuum. A parent's inherited statistics need a pass over every partition (seconds at
    10M rows): the daily `analyze_events` job does that, not the purge.
    """
    tables = {
        model._meta.db_table
        for label, model, *_ in _TARGETS
        if label not in partitioned and any(c.deleted.get(label) for c in counts)
    }
    tables |= touched
    if connection.vendor != "postgresql" or not tables:
        return
    maintenance.analyze(sorted(tables), vacuum=True)


def purge_project(
    *,
    project: Project,
    now: dt.datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pause: float = DEFAULT_PAUSE,
    progress: Callable[[int], None] | None = None,
) -> PurgeCounts:
    """Snapshot one project's expiring aggregates, then remove its expired rows."""
    return _purge([project], now=now, batch_size=batch_size, pause=pause, progress=progress)[0]


def _purge(
    projects: list[Project],
    *,
    now: dt.datetime,
    batch_size: int,
    pause: float,
    progress: Callable[[int], None] | None,
) -> list[PurgeCounts]:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    results: dict[int, PurgeCounts] = {}
    keep_from: dict[int, dt.date] = {}
    oldest_before: dict[int, dt.date | None] = {}
    # Queued rollups first: the snapshots must count every stored event, and a row folded
    # after the purge would bring back activity it removed.
    rollups.fold_rollups()
    for p in projects:
        keep_from[p.pk], _ = _cutoff_values(p, now)
        results[p.pk] = PurgeCounts(project=p.slug, cutoff=keep_from[p.pk])
        results[p.pk].deleted = {label: 0 for label, *_ in _TARGETS}
        # Snapshots first: a drop or delete never takes rows whose totals are not kept.
        results[p.pk].summaries = aggregates.snapshot_expiring(project=p, now=now)
        oldest_before[p.pk] = active.raw_boundary(project=p)
    labels = {label for label, *_ in _TARGETS}
    touched: set[str] = set()
    if projects:
        partitions.finish_pending()
    # Ingest refuses a timestamp older than its project's retention, so before the earliest
    # first kept day of all projects no day can get a row again.
    empty_before = min(
        (aggregates.cutoff_day(project=q, now=now) for q in Project.objects.all()),
        default=dt.date.min,
    )
    # Events before activity, as below: a killed run never leaves activity without its events.
    for parent, label in ((partitions.PARENT, "events"), (partitions.ACTIVITY, "daily_activity")):
        if projects and partitions.partitioned(parent):
            touched |= _purge_partitions(
                keep_from,
                results,
                batch_size=batch_size,
                pause=pause,
                progress=progress,
                parent=parent,
                label=label,
                empty_before=empty_before,
            )
            labels.discard(label)
    for p in projects:
        _purge_rows(
            p,
            now,
            results[p.pk],
            labels=labels,
            batch_size=batch_size,
            pause=pause,
            progress=progress,
        )
    # Closed-day counts of purged days, (install, OS) pairs last active on them and closed
    # periods that began before the cutoff describe rows that are gone (later rows notice the
    # new oldest day by their fingerprint and are recounted by the next refresh).
    for p in projects:
        for model, column in (
            (RollingActivity, "day"),
            (OsActivity, "last_day"),
            (ClosedPeriod, "start"),
            (ErrorDay, "day"),  # with the events they name installs from
        ):
            gone, _ = model.objects.filter(project=p, **{f"{column}__lt": keep_from[p.pk]}).delete()
            if gone:
                touched.add(model._meta.db_table)
        if rolling.carry_periods(project=p, oldest_before=oldest_before[p.pk]):
            touched.add(ClosedPeriod._meta.db_table)
        if cohorts.carry(project=p, oldest_before=oldest_before[p.pk], keep_from=keep_from[p.pk]):
            touched.add(CohortActivity._meta.db_table)
    counts = [results[p.pk] for p in projects]
    _analyze(counts, touched, partitioned={name for name, *_ in _TARGETS} - labels)
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
        chosen = list(projects if projects is not None else Project.objects.all())
        return _purge(chosen, now=now, batch_size=batch_size, pause=pause, progress=progress)
