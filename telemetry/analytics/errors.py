"""Error-like events grouped by fingerprint: Baofeng error types, Pryx warn/error/fatal levels,
and any event whose name starts with "error"; fingerprint = type + message + first stack line.
"""

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

from django.utils.dateparse import parse_datetime

from telemetry.analytics import db
from telemetry.analytics.periods import day_start, db_datetime
from telemetry.models import Project

BAOFENG_ERRORS = ("flash_error", "connect_error", "window_error", "unhandled_rejection")
BAOFENG_ERRORS += ("client_error",)
LEVELS = ("warn", "warning", "error", "fatal")
SCAN_LIMIT = 50_000  # newest error-like events read per request; older ones are noted, not read


def _quoted(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


def error_sql(vendor: str) -> str:
    """The error-like predicate on telemetry_event. On PostgreSQL it is, character for character,
    the predicate of the partial index event_errors_project_ts (migration 0050), which is what
    lets the planner read only the ~2 % of events that are errors."""
    pg = vendor == "postgresql"
    prop = "(properties ->> '{}')" if pg else "json_extract(properties, '$.{}')"
    return (
        f"(name LIKE 'error%' OR name IN ({_quoted(BAOFENG_ERRORS)})"
        f" OR {prop.format('event_type')} IN ({_quoted(BAOFENG_ERRORS)})"
        f" OR {prop.format('level')} IN ({_quoted(LEVELS)}))"
    )


def _aware(value) -> dt.datetime:
    """A raw cursor's timestamp as an aware UTC datetime (SQLite returns text)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _text(value, limit: int = 300) -> str:
    return value[:limit] if isinstance(value, str) else ""


def fingerprint_parts(name: str, props: dict) -> tuple[str, str, str]:
    kind = (
        _text(props.get("event_type"))
        or _text(props.get("error_name"))
        or _text(props.get("type"))
        or _text(props.get("error_code"))
        or (f"{name}:{_text(props.get('level'))}" if props.get("level") else name)
    )
    message = _text(props.get("message")) or _text(props.get("error_message"))
    message = message or _text(props.get("error"))
    stack = _text(props.get("stack"), 2000)
    first_line = next((line.strip() for line in stack.splitlines() if line.strip()), "")
    return kind, message, first_line[:300]


@dataclass
class ErrorGroup:
    fingerprint: str
    kind: str
    message: str
    stack_line: str
    count: int = 0
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    installs: set = field(default_factory=set)
    sample: dict = field(default_factory=dict)

    @property
    def affected_installs(self) -> int:
        return len(self.installs)


def error_groups(*, project: Project, start: dt.date, end: dt.date) -> tuple[list, bool]:
    """Groups of error-like events timestamped in [start, end], most frequent first, and whether
    the scan stopped at SCAN_LIMIT events."""
    conn = db.connection()
    sql = (
        "SELECT name, properties, install_id, timestamp, app_version, os FROM telemetry_event"
        " WHERE project_id = %s AND timestamp >= %s AND timestamp < %s AND "
        + error_sql(conn.vendor).replace("%", "%%")
        + f" ORDER BY timestamp DESC LIMIT {SCAN_LIMIT}"
    )
    params = [
        project.pk,
        db_datetime(day_start(start)),
        db_datetime(day_start(end + dt.timedelta(days=1))),
    ]
    groups: dict[str, ErrorGroup] = {}
    n = 0
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(2000):
            for name, props, install, ts, version, os_name in batch:
                n += 1
                props = json.loads(props) if isinstance(props, str | bytes) else props
                props = props if isinstance(props, dict) else {}
                ts = _aware(ts)
                kind, message, line = fingerprint_parts(name, props)
                key = hashlib.sha256(f"{kind}\0{message}\0{line}".encode()).hexdigest()[:12]
                g = groups.get(key)
                if g is None:
                    g = groups[key] = ErrorGroup(key, kind, message, line, last_seen=ts)
                    g.sample = {
                        "name": name,
                        "app_version": version,
                        "os": os_name,
                        "properties": props,
                    }
                g.count += 1
                g.first_seen = ts
                if install:
                    g.installs.add(install)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.kind))
    return ordered, n >= SCAN_LIMIT
