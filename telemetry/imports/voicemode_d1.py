"""VoiceMode's D1 `events` table (CONTRACTS B2) as events: each row is the request the worker
stored, rebuilt and mapped by the front door's own `event_from_payload`.

`client_ip_hash` (an unsalted SHA-256 prefix, reversible over the IPv4 space) is never read.
"""

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from telemetry.contracts import voicemode
from telemetry.imports import Item, Malformed, Source, d1, parse_moment
from telemetry.ingest.schema import storable
from telemetry.models import Project

COLUMNS = ["event_id", "telemetry_id", "timestamp", "created_at", "environment", "usage"]
NOT_JSON = "environment and usage must be JSON text"


def read(path: Path, *, project: Project, now: dt.datetime, **_options) -> Source:
    conn = d1.connect(path)
    d1.require(conn, "events", COLUMNS)
    (total,) = conn.execute("SELECT count(*) FROM events").fetchone()
    return Source(total=total, items=_items(conn, now))


def _items(conn, now: dt.datetime) -> Iterator[Item]:
    # Oldest first, so batches fill few day partitions; rowid names the row in reports.
    rows = conn.execute(f"SELECT rowid, {', '.join(COLUMNS)} FROM events ORDER BY timestamp, rowid")
    try:
        for rowid, event_id, telemetry_id, timestamp, created_at, environment, usage in rows:
            yield item(
                f"events row {rowid}", event_id, telemetry_id, timestamp, created_at,
                environment, usage, now=now,
            )  # fmt: skip
    except sqlite3.Error as exc:  # a damaged file, found mid-scan
        raise Malformed("events", f"unreadable ({type(exc).__name__}: {exc})") from None


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
            "environment": json.loads(environment) if isinstance(environment, str) else None,
            "usage": json.loads(usage) if isinstance(usage, str) else None,
        }
    except ValueError:
        return Item(where, error=NOT_JSON)
    if not storable(payload):
        return Item(where, error=voicemode.INVALID_JSON)
    try:
        event = voicemode.event_from_payload(payload, now=now, max_age=None)
    except voicemode.Invalid as exc:
        return Item(where, error=str(exc))
    return Item(where, event=event, received_at=parse_moment(created_at))
