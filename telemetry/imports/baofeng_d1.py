"""The Baofeng flasher's D1 tables (CONTRACTS B3) as events: `client_logs` rows are the legacy
`/client-log` requests, `telemetry_events` rows the unified `/event` ones, each mapped by the
front door's own `event_from_body` as of the row's arrival.

Flash successes keep the door's one-per-session id, so `/metrics/flash-count` continues the old
total and a flash also reported live is one flash; other rows take the source's `id`. The
`ip_hash`, `origin`, `user_agent` and `page_url` columns are never read.
"""

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from telemetry.contracts import baofeng
from telemetry.imports import Item, Malformed, Source, d1, from_ms
from telemetry.ingest.schema import EVENT_ID_RE
from telemetry.models import Project

# (table, legacy route?, columns read besides id and received_at_ms)
FIELDS = [
    "occurred_at",
    "event_type",
    "message",
    "error_name",
    "stack",
    "model",
    "write_mode",
    "connected",
    "app_version",
    "log_lines_json",
]
TABLES = [
    ("client_logs", True, FIELDS),
    ("telemetry_events", False, [*FIELDS, "session_id", "metadata_json"]),
]


def read(path: Path, *, project: Project, now: dt.datetime, **_options) -> Source:
    conn = d1.connect(path)
    present = [t for t in TABLES if d1.has_table(conn, t[0])]
    if not present:
        raise Malformed("table client_logs", "missing (and no telemetry_events either)")
    total = 0
    for table, _legacy, columns in present:
        d1.require(conn, table, ["id", "received_at_ms", *columns])
        total += conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return Source(total=total, items=_items(conn, present, project, now))


def _items(conn, tables, project: Project, now: dt.datetime) -> Iterator[Item]:
    for table, legacy, columns in tables:
        rows = conn.execute(
            f"SELECT rowid, id, received_at_ms, {', '.join(columns)} FROM {table}"
            " ORDER BY received_at_ms, rowid"
        )
        try:
            for rowid, source_id, received_ms, *values in rows:
                body = {k: v for k, v in zip(columns, values, strict=True) if v is not None}
                yield item(
                    f"{table} row {rowid}",
                    source_id,
                    from_ms(received_ms),
                    body,
                    legacy=legacy,
                    project=project,
                    now=now,
                )
        except sqlite3.Error as exc:
            raise Malformed(table, f"unreadable ({exc})") from None


def item(
    where: str,
    source_id,
    received: dt.datetime | None,
    body: dict,
    *,
    legacy: bool,
    project: Project,
    now: dt.datetime,
) -> Item:
    # The door files a far-off clock under arrival: the row's arrival, not today.
    arrival = min(received, now) if received is not None else now
    try:
        event = baofeng.event_from_body(body, legacy=legacy, project=project, now=arrival)
    except baofeng.Invalid:
        return Item(where, error=baofeng.INVALID_FIELDS)
    if event.event_id is None and source_id is not None:
        event.event_id = event_id(str(source_id))
    return Item(where, event=event, received_at=received)


def event_id(source_id: str) -> str:
    """The worker's row id (a UUID) as the dedupe key; an id that does not fit is hashed."""
    if EVENT_ID_RE.fullmatch(source_id):
        return source_id
    return "bf_" + hashlib.sha256(source_id.encode()).hexdigest()[:40]
