"""Importing history from the systems the platform replaces: read a source, store the events
inside the project's retention through the pipeline, keep older rows as anonymous aggregates.

Batches are stored one transaction each; a malformed file stops the import with the batch in
progress rolled back. Imports are idempotent: the sources' ids are the events' dedupe keys.
"""

import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import DatabaseError, connection, transaction

from telemetry.imports import FORMATS, Item, Malformed, open_source
from telemetry.ingest import pipeline
from telemetry.ingest.privacy import redact
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import Event, Install, Project
from telemetry.services import aggregates, partitions
from telemetry.services.stats import day_start

log = logging.getLogger(__name__)

BATCH_SIZE = 20_000
MAX_REFUSALS = 1_000  # listed in the report; all are counted


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
            day = event.timestamp.date()
            first = self.first_day.get(event.install_id)
            if first is None or day < first:
                self.first_day[event.install_id] = day
            if not old:
                self.kept.add(event.install_id)

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


def import_events(
    *,
    project: Project,
    fmt: str,
    path: Path,
    now: dt.datetime,
    dry_run: bool = False,
    dataset: str | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int | None], None] | None = None,
) -> ImportReport:
    """Import `path` read as `fmt` into `project`; raises ImportFailed on a malformed file
    (batches before it stay stored, the one in progress is rolled back, no aggregates).

    `on_total` is told how many rows the source holds, once it is open; `progress` is told
    of rows read, a thousand at a time."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    batch_size = batch_size or BATCH_SIZE
    report = ImportReport(format=fmt, project=project.slug, dry_run=dry_run)
    keep_from = aggregates.cutoff_day(project=project, now=now)
    report.cutoff = keep_from
    oldest_kept = day_start(keep_from)
    history = _History()
    batch: list[Item] = []
    touched: set[dt.date] = set()
    try:
        source = open_source(fmt, path, project=project, now=now, dataset=dataset)
        if on_total:
            on_total(source.total)
        for item in source.items:
            report.rows += 1
            event = item.event
            if event is None:
                report.refused += 1
                if len(report.refusals) < MAX_REFUSALS:
                    report.refusals.append({"row": item.where, "error": item.error})
            else:
                history.seen(event, old=event.timestamp < oldest_kept)
                if event.timestamp < oldest_kept:
                    history.add(event)
                    report.aggregated += 1
                else:
                    batch.append(item)
            if len(batch) >= batch_size:
                _flush(project, batch, report, now, touched, dry_run=dry_run)
                batch = []
                report.committed_rows = report.rows
            if progress and report.rows % 1000 == 0:
                progress(1000)
        _flush(project, batch, report, now, touched, dry_run=dry_run)
    except Malformed as exc:
        _fold_committed(dry_run)
        raise ImportFailed(exc, report) from None
    except DatabaseError as exc:
        # The batch's transaction was rolled back; the ones before it stay committed.
        where = f"rows {report.committed_rows + 1}-{report.rows}"
        error = Malformed(where, f"the database refused the batch ({type(exc).__name__})")
        _fold_committed(dry_run)
        raise ImportFailed(error, report) from exc
    if progress and report.rows % 1000:
        progress(report.rows % 1000)
    report.committed_rows = report.rows
    if not dry_run:
        pipeline.fold_rollups()  # the imported events' rollups, before they are read below
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


def _fold_committed(dry_run: bool) -> None:
    """The batches committed before a failure keep exact rollups; if the database is what
    failed, the beat job folds them once it answers again."""
    if dry_run:
        return
    try:
        pipeline.fold_rollups()
    except DatabaseError:
        log.warning("import: rollups of the committed batches left to the fold job")


def _key(event: IncomingEvent):
    return event.event_id if event.dedupe_any_time else (event.event_id, event.timestamp)


def _flush(
    project: Project,
    batch: list[Item],
    report: ImportReport,
    now: dt.datetime,
    touched: set[dt.date],
    *,
    dry_run: bool,
) -> None:
    """Store one batch in one transaction; count what was new and what was there already."""
    if not batch:
        return
    seen: set = set()
    fresh: list[Item] = []
    for item in batch:
        key = _key(item.event) if item.event.event_id else None
        if key is not None and key in seen:
            report.duplicates += 1  # a second copy in the same file
            continue
        seen.add(key)
        fresh.append(item)
    fresh, known = _drop_stored_idless(project, fresh)
    report.duplicates += known
    if not fresh:
        return
    events = [i.event for i in fresh]
    if dry_run:
        stored = _would_store(project, events)
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
    and the rollup tables. (The parent's own statistics are the daily analyze job's.)"""
    if connection.vendor != "postgresql" or not (days or history):
        return
    tables = set()
    if days:
        if partitions.partitioned():
            names = partitions.existing()
            tables |= {names[d] for d in days if d in names}
        else:
            tables.add(partitions.PARENT)
    if rollups:
        tables |= {
            "telemetry_install",
            "telemetry_dailyactivity",
            "telemetry_periodactivity",
            "telemetry_dailycount",
        }
    if history:
        tables |= {"telemetry_dailysummary", "telemetry_dailycount"}
    with connection.cursor() as cursor:
        for table in sorted(tables):
            cursor.execute(f"ANALYZE {table}")
