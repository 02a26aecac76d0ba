"""The events explorer: one filtered, newest-first query, paged without COUNT(*), and the same
filter streamed row by row for CSV (cells made safe by csvcells.py) and NDJSON export."""

import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

from django.db.models import QuerySet

from telemetry import csvcells
from telemetry.analytics.periods import day_start
from telemetry.models import Event, Project

COLUMNS = ("timestamp", "received_at", "name", "install_id", "session_id", "app_version", "os")


@dataclass
class EventFilter:
    name: str = ""
    install_id: str = ""
    app_version: str = ""
    start: dt.date | None = None
    end: dt.date | None = None


def filtered(*, project: Project, f: EventFilter) -> QuerySet:
    qs = Event.objects.filter(project=project)
    if f.name:
        qs = qs.filter(name=f.name)
    if f.install_id:
        qs = qs.filter(install_id=f.install_id)
    if f.app_version:
        qs = qs.filter(app_version=f.app_version)
    if f.start:
        qs = qs.filter(timestamp__gte=day_start(f.start))
    if f.end:
        qs = qs.filter(timestamp__lt=day_start(f.end + dt.timedelta(days=1)))
    return qs.order_by("-timestamp", "-id")


def page(*, project: Project, f: EventFilter, number: int, size: int = 50) -> tuple[list, bool]:
    """Rows of page `number` (1-based) and whether a next page exists."""
    offset = (max(1, number) - 1) * size
    rows = list(filtered(project=project, f=f)[offset : offset + size + 1])
    return rows[:size], len(rows) > size


def _rows(project: Project, f: EventFilter):
    fields = (*COLUMNS, "event_id", "properties")
    return filtered(project=project, f=f).values_list(*fields).iterator(chunk_size=2000)


def export_csv(*, project: Project, f: EventFilter) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csvcells.writer(buffer)
    writer.writerow((*COLUMNS, "event_id", "properties"))
    yield buffer.getvalue()
    for row in _rows(project, f):
        buffer.seek(0)
        buffer.truncate()
        *head, event_id, props = row
        writer.writerow(
            csvcells.row(
                [
                    *(v.isoformat() if isinstance(v, dt.datetime) else v for v in head),
                    event_id,
                    json.dumps(props, separators=(",", ":"), sort_keys=True),
                ]
            )
        )
        yield buffer.getvalue()


def export_ndjson(*, project: Project, f: EventFilter) -> Iterator[str]:
    for row in _rows(project, f):
        record = dict(zip((*COLUMNS, "event_id", "properties"), row, strict=True))
        for k in ("timestamp", "received_at"):
            record[k] = record[k].isoformat()
        yield json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n"
