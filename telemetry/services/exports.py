"""Exporting a project's raw events as CSV or NDJSON, streamed in constant memory.

Rows come through .iterator(chunk_size=…) ordered by (received_at, id) on the
(project, received_at) index; `since`/`until` bound received_at. No IP hash leaves the server.
CSV cells are neutralised against formula injection (telemetry/csvcells.py).
"""

import datetime as dt
import json
from collections.abc import Callable
from typing import TextIO

from telemetry import csvcells
from telemetry.models import Event, Project

FORMATS = ("csv", "ndjson")
FIELDS = [
    "event_id",
    "install_id",
    "name",
    "timestamp",
    "received_at",
    "session_id",
    "app_version",
    "os",
    "properties",
]
CHUNK_SIZE = 2_000


def export_queryset(
    *, project: Project, since: dt.datetime | None = None, until: dt.datetime | None = None
):
    qs = Event.objects.filter(project=project)
    if since is not None:
        qs = qs.filter(received_at__gte=since)
    if until is not None:
        qs = qs.filter(received_at__lt=until)
    return qs.order_by("received_at", "id").values_list(*FIELDS)


def export_events(
    *,
    project: Project,
    out: TextIO,
    fmt: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write matching events to `out`; returns how many."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    rows = export_queryset(project=project, since=since, until=until).iterator(
        chunk_size=CHUNK_SIZE
    )
    writer = csvcells.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow(FIELDS)
    n = 0
    for row in rows:
        record = dict(zip(FIELDS, row, strict=True))
        record["timestamp"] = record["timestamp"].isoformat()
        record["received_at"] = record["received_at"].isoformat()
        if writer:
            record["properties"] = json.dumps(record["properties"], separators=(",", ":"))
            writer.writerow(csvcells.row(record[f] for f in FIELDS))
        else:
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
        n += 1
        if progress and n % CHUNK_SIZE == 0:
            progress(CHUNK_SIZE)
    if progress and n % CHUNK_SIZE:
        progress(n % CHUNK_SIZE)
    return n
