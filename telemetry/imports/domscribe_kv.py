"""Domscribe's KV session records (CONTRACTS B1) as events: JSON lines of {"key", "value"}, as a
`wrangler kv key list` plus each value gives them, mapped by the front door's own
`event_from_payload` with the week of the key.

Key `session:<YYYY-Www>:<session_id>`; value: the five payload fields and `first_seen_at`.
"""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from telemetry.contracts import domscribe
from telemetry.http import parse_json
from telemetry.imports import Item, Malformed, Source, count_lines, json_lines, parse_moment
from telemetry.models import Project

NOT_A_SESSION = "not a session record (key session:<YYYY-Www>:<session_id>)"
BAD_VALUE = "value is not a JSON object"


def read(path: Path, *, project: Project, now: dt.datetime, **_options) -> Source:
    if not path.is_file():
        raise Malformed(str(path), "no such file")
    return Source(total=count_lines(path), items=_items(path))


def _items(path: Path) -> Iterator[Item]:
    for number, record in json_lines(path):
        if not isinstance(record, dict) or not {"key", "value"} <= record.keys():
            raise Malformed(f"line {number}", 'expected an object {"key": …, "value": …}')
        yield item(f"line {number}", record["key"], record["value"])


def item(where: str, key, value) -> Item:
    parts = key.split(":", 2) if isinstance(key, str) else []
    if len(parts) != 3 or parts[0] != "session":
        return Item(where, error=NOT_A_SESSION)
    _, week, session_id = parts
    if isinstance(value, str):
        try:
            value = parse_json(value.encode())
        except ValueError:
            return Item(where, error=BAD_VALUE)
    if not isinstance(value, dict):
        return Item(where, error=BAD_VALUE)
    payload = {k: v for k, v in value.items() if k != "first_seen_at"}
    payload["session_id"] = session_id
    event = domscribe.event_from_payload(payload, week=week)
    if event is None:
        return Item(where, error=domscribe.INVALID_PAYLOAD)
    return Item(where, event=event, received_at=parse_moment(value.get("first_seen_at")))
