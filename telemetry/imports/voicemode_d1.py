"""VoiceMode's D1 `events` table (CONTRACTS B2) as events: each row is the request the worker
stored, rebuilt and mapped by the front door's own `event_from_payload`.

`client_ip_hash` (an unsalted SHA-256 prefix, reversible over the IPv4 space) is never read.
"""

import datetime as dt
import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from telemetry.contracts import voicemode
from telemetry.http import parse_json
from telemetry.imports import Item, Malformed, Source, d1, parse_moment
from telemetry.ingest.schema import storable, storable_json, storable_scalars
from telemetry.models import Project

COLUMNS = ["event_id", "telemetry_id", "timestamp", "created_at", "environment", "usage"]
NOT_JSON = "environment and usage must be JSON text"


def read(path: Path, *, project: Project, now: dt.datetime, **_options) -> Source:
    conn = d1.connect(path)
    d1.require(conn, "events", COLUMNS)
    (total,) = conn.execute("SELECT count(*) FROM events").fetchone()
    rows = _rows(conn)
    map_row = partial(row_item, now=now)
    return Source(total=total, items=map(map_row, rows), rows=rows, map_row=map_row)


def _rows(conn) -> Iterator[tuple]:
    # Oldest first, so batches fill few day partitions; rowid names the row in reports.
    rows = conn.execute(f"SELECT rowid, {', '.join(COLUMNS)} FROM events ORDER BY timestamp, rowid")
    try:
        yield from rows
    except sqlite3.Error as exc:  # a damaged file, found mid-scan
        raise Malformed("events", f"unreadable ({type(exc).__name__}: {exc})") from None


def row_item(row: tuple, *, now: dt.datetime) -> Item:
    """One `events` row (rowid first, then COLUMNS) as the front door maps its request."""
    rowid, event_id, telemetry_id, timestamp, created_at, environment, usage = row
    return item(
        f"events row {rowid}", event_id, telemetry_id, timestamp, created_at, environment, usage,
        now=now,
    )  # fmt: skip


def item(
    where: str,
    event_id,
    telemetry_id,
    timestamp,
    created_at,
    environment,
    usage,
    *,
    now: dt.datetime,
) -> Item:
    try:
        payload = {
            "event_id": event_id,
            "telemetry_id": telemetry_id,
            "timestamp": timestamp,
            # As the front door reads its body: no NaN or Infinity, however deep.
            "environment": parse_json(environment) if isinstance(environment, str) else None,
            "usage": parse_json(usage) if isinstance(usage, str) else None,
        }
    except ValueError:
        return Item(where, error=NOT_JSON)
    # The front door's `storable(payload)`, answered from the JSON text where it can be.
    if not (
        _storable_text(environment)
        and _storable_text(usage)
        and storable_scalars(event_id, telemetry_id, timestamp)
    ) and not storable(payload):
        return Item(where, error=voicemode.INVALID_JSON)
    try:
        event = voicemode.event_from_payload(payload, now=now, max_age=None)
    except voicemode.Invalid as exc:
        return Item(where, error=str(exc))
    return Item(where, event=event, received_at=parse_moment(created_at))


def _storable_text(value) -> bool:
    # The payload's object values sit at depth 2 (storable counts the payload as 1).
    return not isinstance(value, str) or storable_json(value, depth=2)
