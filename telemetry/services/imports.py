"""Importing history from the systems the platform replaces: read a source, store the events
inside the project's retention through the pipeline, keep older rows as anonymous aggregates.

Batches are stored one transaction each; a malformed file stops the import with the batch in
progress rolled back. Imports are idempotent: the sources' ids are the events' dedupe keys.
Large imports on PostgreSQL map their rows in worker processes (the reader's own mapping) while
the main process stores the batches already mapped, in file order.
"""

import datetime as dt
import gc
import itertools
import json
import logging
import multiprocessing
import os
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db import DatabaseError, connection, transaction

from telemetry.imports import FORMATS, Item, Malformed, open_source
from telemetry.ingest import pipeline, rollups
from telemetry.ingest.privacy import redact
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import Event, Install, Project
from telemetry.services import aggregates, partitions
from telemetry.services.stats import day_start

log = logging.getLogger(__name__)

BATCH_SIZE = 20_000
MAX_REFUSALS = 1_000  # listed in the report; all are counted
# Below this many rows, starting worker processes costs more than mapping in one process saves.
PARALLEL_MIN_ROWS = 100_000
MAX_WORKERS = 4
# A batch takes a worker seconds; one that has not answered in this long is not coming back.
WORKER_TIMEOUT = 600


@dataclass
class ImportReport:
    """What an import read, stored, found already stored, refused and kept as aggregates."""

    format: str
    project: str
    dry_run: bool = False
    rows: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    aggregated: int = 0  # rows older than retention, kept only in the daily aggregates
    aggregated_days: int = 0
    committed_rows: int = 0  # rows read up to the last committed batch
    cutoff: dt.date | None = None
    refusals: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "format": self.format,
            "project": self.project,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "aggregated": self.aggregated,
            "aggregated_days": self.aggregated_days,
            "retention_cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "refusals": self.refusals,
        }


class ImportFailed(Exception):
    """A malformed file (or a batch the database refused): `report` says how far the import
    got before `error`."""

    def __init__(self, error: Malformed, report: ImportReport) -> None:
        super().__init__(str(error))
        self.error = error
        self.report = report


class _History:
    """Anonymous per-day totals of the rows older than retention: never an id leaves here."""

    def __init__(self) -> None:
        self.active: dict[dt.date, set[str]] = defaultdict(set)
        self.counts: dict[tuple[dt.date, str], int] = defaultdict(int)
        self.first_day: dict[str, dt.date] = {}
        self.kept: set[str] = set()  # installs with a row inside retention

    def seen(self, event: IncomingEvent, *, old: bool) -> None:
        """Every row: an install first seen on an old day is that day's new install."""
        if event.install_id:
            if not old:
                # Counted new by its Install row: its first old day no longer matters.
                self.kept.add(event.install_id)
                return
            day = event.timestamp.date()
            first = self.first_day.get(event.install_id)
            if first is None or day < first:
                self.first_day[event.install_id] = day

    def merge(self, other: "_History") -> None:
        """Add another batch's totals (mapped in a worker) to these."""
        self.kept |= other.kept
        for install_id, day in other.first_day.items():
            first = self.first_day.get(install_id)
            if first is None or day < first:
                self.first_day[install_id] = day
        for day, installs in other.active.items():
            self.active[day] |= installs
        for key, n in other.counts.items():
            self.counts[key] += n

    def forget_new(self, project: Project) -> None:
        """An install with a row (or live events) inside retention is counted new by its
        Install row already: counting it on an old day too would count it twice."""
        old_first = [i for i in self.first_day if i not in self.kept]
        for start in range(0, len(old_first), 1000):
            self.kept.update(
                Install.objects.filter(
                    project=project, install_id__in=old_first[start : start + 1000]
                ).values_list("install_id", flat=True)
            )
        self.first_day = {i: d for i, d in self.first_day.items() if i not in self.kept}

    def add(self, event: IncomingEvent) -> None:
        day = event.timestamp.date()
        self.counts[(day, event.name)] += 1
        if event.install_id:
            self.active[day].add(event.install_id)

    def days(self) -> list[dt.date]:
        return sorted({day for day, _ in self.counts})

    def summaries(self) -> list[tuple[dt.date, int, int, int]]:
        new: dict[dt.date, int] = defaultdict(int)
        for day in self.first_day.values():
            new[day] += 1
        events: dict[dt.date, int] = defaultdict(int)
        for (day, _name), n in self.counts.items():
            events[day] += n
        return [(d, len(self.active.get(d, ())), new.get(d, 0), events[d]) for d in self.days()]


@dataclass
class _Batch:
    """Up to a batch of source rows, read and mapped: what the report counts of them, and the
    events left to store (in file order, a key's later copies in the batch dropped)."""

    rows: int = 0
    refused: int = 0
    refusals: list[dict[str, str]] = field(default_factory=list)
    aggregated: int = 0
    repeats: int = 0  # a second copy of a key in the same batch
    history: _History = field(default_factory=_History)
    fresh: list[Item] = field(default_factory=list)
    # Mapped in a worker: the fresh events encoded by pipeline.stage_imported, and their days.
    staged: dict[dt.date | None, bytes] = field(default_factory=dict)
    staged_rows: int = 0
    days: set[dt.date] = field(default_factory=set)


def import_events(
    *,
    project: Project,
    fmt: str,
    path: Path,
    now: dt.datetime,
    dry_run: bool = False,
    dataset: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int | None], None] | None = None,
) -> ImportReport:
    """Import `path` read as `fmt` into `project`; raises ImportFailed on a malformed file
    (batches before it stay stored, the one in progress is rolled back, no aggregates).

    `workers` processes map the rows when the reader allows it, on PostgreSQL and not in a dry
    run (None: one per core, up to MAX_WORKERS, from PARALLEL_MIN_ROWS rows on; 1: none).
    `on_total` is told how many rows the source holds, once it is open; `progress` is told
    of rows imported, a batch at a time."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    batch_size = batch_size or BATCH_SIZE
    report = ImportReport(format=fmt, project=project.slug, dry_run=dry_run)
    keep_from = aggregates.cutoff_day(project=project, now=now)
    report.cutoff = keep_from
    oldest_kept = day_start(keep_from)
    history = _History()
    touched: set[dt.date] = set()
    # Days with no event partition yet are written whole (PostgreSQL); by a thread of their
    # own while batches go on, unless the caller's transaction keeps the held tables unseen.
    fresh = None
    if not dry_run and connection.vendor == "postgresql":
        fresh = pipeline.FreshDays(background=not connection.in_atomic_block)

    def done(batch: _Batch) -> None:
        _count(report, history, batch)
        if batch.staged_rows:
            days = _store_rows(batch.staged, batch.staged_rows, batch.days, report, touched, fresh)
        else:
            days = _flush(project, batch.fresh, report, now, touched, fresh, dry_run=dry_run)
        report.committed_rows += batch.rows
        if progress:
            progress(batch.rows)
        if fresh is not None and days:
            # Held days that no later row can reach any more, written while workers map on.
            _write_held(fresh, report, touched, before=min(days))

    source = None
    try:
        source = open_source(fmt, path, project=project, now=now, dataset=dataset)
        if on_total:
            on_total(source.total)
        n = _workers(source, workers, dry_run=dry_run)
        if n > 1:
            _map_in_workers(source, n, batch_size, report, done, project, now, oldest_kept)
        else:
            for items in _chunks(source.items, batch_size, report):
                done(_split(items, oldest_kept))
        if fresh is not None:
            _write_held(fresh, report, touched)
    except Malformed as exc:
        _finish_committed(fresh, report, touched, dry_run)
        raise ImportFailed(exc, report) from None
    except HeldNotStored as exc:
        # Every batch read so far was committed; what failed is writing held days.
        error = Malformed(
            f"rows held for {exc.days} day(s) without a partition",
            f"the database refused them ({type(exc.__cause__).__name__}); the rows stored"
            " before stay, and running the import again stores the rest",
        )
        _finish_committed(fresh, report, touched, dry_run)
        raise ImportFailed(error, report) from exc
    except DatabaseError as exc:
        # The batch's transaction was rolled back; the ones before it stay committed.
        where = f"rows {report.committed_rows + 1}-{report.rows}"
        error = Malformed(where, f"the database refused the batch ({type(exc).__name__})")
        _finish_committed(fresh, report, touched, dry_run)
        raise ImportFailed(error, report) from exc
    finally:
        if fresh is not None:
            fresh.close()  # the writer thread, on any way out
        if source is not None:
            _close(source)
    if not dry_run:
        rollups.fold_rollups()  # the imported events' rollups, before they are read below
    history.forget_new(project)
    summaries = history.summaries()
    report.aggregated_days = len(summaries)
    if not dry_run:
        if summaries:
            aggregates.merge_history(
                project=project,
                summaries=summaries,
                counts=[(d, name, n) for (d, name), n in sorted(history.counts.items())],
            )
        _analyze(touched, rollups=bool(report.stored), history=bool(summaries))
    return report


def _close(source) -> None:
    """Close the reader's generators here, in this thread: one left to the collector may be
    finalised in whichever thread the collector runs in next, where its SQLite cursor refuses."""
    for rows in (source.items, source.rows):
        if close := getattr(rows, "close", None):
            close()


def _workers(source, requested: int | None, *, dry_run: bool) -> int:
    """How many processes map rows: 1 (this one) unless the reader, the database and the size
    make workers pay."""
    if (
        dry_run
        or source.map_row is None
        or connection.vendor != "postgresql"
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return 1
    if requested is not None:
        return max(1, min(requested, MAX_WORKERS))
    if source.total is None or source.total < PARALLEL_MIN_ROWS:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def _chunks(rows: Iterable, size: int, report: ImportReport) -> Iterator[list]:
    """`rows` in lists of `size`, counting each row read (a Malformed source stops mid-list)."""
    it = iter(rows)
    while True:
        chunk = []
        for row in itertools.islice(it, size):
            chunk.append(row)
            report.rows += 1
        if not chunk:
            return
        yield chunk


def _split(items: Iterable[Item], oldest_kept: dt.datetime) -> _Batch:
    """Count refusals, keep rows older than retention as aggregates only, drop repeats."""
    batch = _Batch()
    seen: set = set()
    history = batch.history
    for item in items:
        batch.rows += 1
        event = item.event
        if event is None:
            batch.refused += 1
            if len(batch.refusals) < MAX_REFUSALS:
                batch.refusals.append({"row": item.where, "error": item.error})
            continue
        old = event.timestamp < oldest_kept
        history.seen(event, old=old)
        if old:
            history.add(event)
            batch.aggregated += 1
            continue
        if event.event_id:
            key = _key(event)
            if key in seen:
                batch.repeats += 1  # a second copy in the same batch
                continue
            seen.add(key)
        batch.fresh.append(item)
    return batch


def _count(report: ImportReport, history: _History, batch: _Batch) -> None:
    report.refused += batch.refused
    room = MAX_REFUSALS - len(report.refusals)
    if room > 0:
        report.refusals.extend(batch.refusals[:room])
    report.aggregated += batch.aggregated
    report.duplicates += batch.repeats
    history.merge(batch.history)


# What a worker needs besides its rows, set before the pool forks (so never pickled).
_WORK: dict = {}


def _map_in_workers(
    source,
    n: int,
    batch_size: int,
    report: ImportReport,
    done: Callable[[_Batch], None],
    project: Project,
    now: dt.datetime,
    oldest_kept: dt.datetime,
) -> None:
    """Map batches of raw rows in `n` forked workers; store each in file order as it comes back,
    while the workers map the next ones. At most 2n batches are in flight (bounded memory); a
    failure anywhere ends the pool, and the batches not stored yet are dropped with it."""
    _WORK.update(map_row=source.map_row, project=project, now=now, oldest_kept=oldest_kept)
    try:
        # Each worker starts by freezing what it inherited (Django, the app, the reader): the
        # collector's full passes, which a batch of mapped rows sets off, then skip it.
        with multiprocessing.get_context("fork").Pool(n, initializer=gc.freeze) as pool:
            pending: deque = deque()
            for rows in _chunks(source.rows, batch_size, report):
                pending.append(pool.apply_async(_map_batch, (rows,)))
                if len(pending) >= 2 * n:
                    done(_mapped(pending.popleft(), report))
            while pending:
                done(_mapped(pending.popleft(), report))
    finally:
        _WORK.clear()


def _mapped(result, report: ImportReport) -> "_Batch":
    """A worker's batch; a worker killed mid-batch (out of memory, a signal) never answers, and
    the pool would wait for ever: past WORKER_TIMEOUT the import stops, saying so."""
    try:
        return result.get(timeout=WORKER_TIMEOUT)
    except multiprocessing.TimeoutError:
        where = f"rows {report.committed_rows + 1}-{report.rows}"
        raise Malformed(
            where, f"a mapping worker gave no answer in {WORKER_TIMEOUT} s (was it killed?)"
        ) from None


def _map_batch(rows: list[tuple]) -> _Batch:
    """In a worker: map the rows by the reader's function and encode the events to store, so
    only bytes and counts travel back (pickling the events would cost more than mapping)."""
    # The batch's mapped rows live until encoded, and the collector's passes over them find no
    # cycle to free: with it off, a batch costs 13 % less CPU (bench/RESULTS.md, session 13).
    gc.disable()
    try:
        return _map_and_stage(rows)
    finally:
        gc.enable()


def _map_and_stage(rows: list[tuple]) -> _Batch:
    batch = _split(map(_WORK["map_row"], rows), _WORK["oldest_kept"])
    events = [i.event for i in batch.fresh]
    if any(e.event_id is None for e in events):
        raise RuntimeError("a reader mapping rows in workers made an event without an id")
    batch.staged = pipeline.stage_imported_days(
        project=_WORK["project"],
        events=events,
        now=_WORK["now"],
        received_at=[i.received_at for i in batch.fresh],
    )
    batch.staged_rows = len(events)
    batch.days = {e.timestamp.astimezone(dt.UTC).date() for e in events}
    batch.fresh = []
    return batch


def _finish_committed(
    fresh: "pipeline.FreshDays | None", report: ImportReport, touched: set[dt.date], dry_run: bool
) -> None:
    """The batches committed before a failure are stored whole (their held days too) and keep
    exact rollups; if the database is what failed, held rows are lost with this session (a
    second run imports them) and the beat job folds the rest once it answers again."""
    if dry_run:
        return
    try:
        if fresh is not None:
            _write_held(fresh, report, touched)
    except HeldNotStored:
        log.warning("import: rows held for new days not stored; run the import again")
        try:
            fresh.discard()
        except DatabaseError:
            log.warning("import: held tables left for the next import to drop")
    try:
        rollups.fold_rollups()
    except DatabaseError:
        log.warning("import: rollups of the committed batches left to the fold job")


class HeldNotStored(Exception):
    """Writing held days failed (the database error is the cause); `days` were held."""

    def __init__(self, days: int) -> None:
        super().__init__(f"{days} held day(s) not stored")
        self.days = days


def _write_held(
    fresh: "pipeline.FreshDays",
    report: ImportReport,
    touched: set[dt.date],
    *,
    before: dt.date | None = None,
) -> None:
    """Write the days held for want of a partition (PostgreSQL), in groups of one transaction
    each: all of them, or those `before` a day once they are enough (FreshDays.attach_before)."""
    try:
        attached = fresh.attach() if before is None else fresh.attach_before(before)
    except DatabaseError as exc:
        _count_held(fresh.take_written(), report, touched)  # the groups before the failure
        raise HeldNotStored(len(fresh.held)) from exc
    _count_held(attached, report, touched)


def _count_held(
    written: tuple[int, int, set[dt.date]], report: ImportReport, touched: set[dt.date]
) -> None:
    stored, copies, days = written
    report.stored += stored
    report.duplicates += copies
    touched |= days


def _key(event: IncomingEvent):
    return event.event_id if event.dedupe_any_time else (event.event_id, event.timestamp)


def _flush(
    project: Project,
    fresh: list[Item],
    report: ImportReport,
    now: dt.datetime,
    touched: set[dt.date],
    held: "pipeline.FreshDays | None",
    *,
    dry_run: bool,
) -> set[dt.date]:
    """Store one batch in one transaction; count what was new and what was there already.
    Returns the days of its rows when `held` may have taken some (else none)."""
    fresh, known = _drop_stored_idless(project, fresh)
    report.duplicates += known
    if not fresh:
        return set()
    events = [i.event for i in fresh]
    if dry_run:
        stored = _would_store(project, events)
    elif held is not None:
        staged = pipeline.stage_imported_days(
            project=project, events=events, now=now, received_at=[i.received_at for i in fresh]
        )
        return _store_rows(staged, len(events), _days(events), report, touched, held)
    else:
        days = {e.timestamp.astimezone(dt.UTC).date() for e in events}
        if partitions.partitioned():
            partitions.ensure(days)  # outside the transaction: DDL must not wait on it
        with transaction.atomic():
            stored = pipeline.store_imported(
                project=project, events=events, now=now, received_at=[i.received_at for i in fresh]
            )
        touched |= days
    n = sum(stored)
    report.stored += n
    report.duplicates += len(stored) - n
    return set()


def _store_rows(
    staged: dict[dt.date | None, bytes],
    rows: int,
    days: set[dt.date],
    report: ImportReport,
    touched: set[dt.date],
    fresh: "pipeline.FreshDays | None",
) -> set[dt.date]:
    """Store one batch of rows encoded by pipeline.stage_imported (mapped here or in a
    worker), in one transaction; the rows of days `fresh` holds are counted when it writes
    them. Returns the batch's days."""
    held = fresh.pick(days) if fresh is not None else set()
    if days - held and (fresh.partitioned if fresh is not None else partitions.partitioned()):
        partitions.ensure(days - held)  # outside the transaction: DDL must not wait on it
    try:
        with transaction.atomic():
            n = len(pipeline.store_staged(staged, days=days, fresh=fresh, held=held))
    except BaseException:
        if fresh is not None:
            fresh.settle(committed=False)  # what it held (a held table it made too) went with it
        raise
    now_held = fresh.settle(committed=True) if fresh is not None else 0
    touched |= days - held
    report.stored += n
    report.duplicates += rows - n - now_held
    return days


def _days(events: list[IncomingEvent]) -> set[dt.date]:
    return {e.timestamp.astimezone(dt.UTC).date() for e in events}


def _would_store(project: Project, events: list[IncomingEvent]) -> list[bool]:
    """The dry run's answer to store_imported, from a read of the ids already stored."""
    ids = [e.event_id for e in events if e.event_id]
    found: set = set()
    for start in range(0, len(ids), 1000):
        for event_id, timestamp in Event.objects.filter(
            project=project, event_id__in=ids[start : start + 1000]
        ).values_list("event_id", "timestamp"):
            found.add(event_id)
            found.add((event_id, timestamp))
    return [not e.event_id or _key(e) not in found for e in events]


def _drop_stored_idless(project: Project, items: list[Item]) -> tuple[list[Item], int]:
    """Events without an id (Axiom items, some exports) have no dedupe key: an identical event
    (install, name, time, properties) already stored is taken for this row, imported before."""
    idless = [i.event for i in items if not i.event.event_id]
    if not idless:
        return items, 0
    low = min(e.timestamp for e in idless)
    high = max(e.timestamp for e in idless)
    stored = {
        (install_id, name, timestamp, _canonical(properties))
        for install_id, name, timestamp, properties in Event.objects.filter(
            project=project, event_id__isnull=True, timestamp__gte=low, timestamp__lte=high
        ).values_list("install_id", "name", "timestamp", "properties")
    }
    if not stored:
        return items, 0
    keep = []
    for i in items:
        e = i.event
        if not e.event_id:
            props = redact(e.properties) if project.redact_pii else e.properties
            if (e.install_id, e.name, e.timestamp, _canonical(props)) in stored:
                continue
        keep.append(i)
    return keep, len(items) - len(keep)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _analyze(days: set[dt.date], *, rollups: bool, history: bool) -> None:
    """Every bulk write leaves the database ready to plan (STYLE 16): the day partitions written
    (events and daily activity) and the other rollup tables. (The parents' own statistics are
    the daily analyze job's: analysing a parent samples every partition again.)"""
    if connection.vendor != "postgresql" or not (days or history):
        return
    tables = set()
    parents = [partitions.PARENT, partitions.ACTIVITY] if rollups else [partitions.PARENT]
    for parent in parents if days else []:
        if partitions.partitioned(parent):
            names = partitions.existing(parent=parent)
            tables |= {names[d] for d in days if d in names}
        else:
            tables.add(parent)
    if rollups:
        tables |= {"telemetry_install", "telemetry_periodactivity", "telemetry_dailycount"}
    if history:
        tables |= {"telemetry_dailysummary", "telemetry_dailycount"}
    with connection.cursor() as cursor:
        for table in sorted(tables):
            cursor.execute(f"ANALYZE {table}")
