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


# The only properties a fingerprint reads (fingerprint_parts): grouped in SQL as one JSON array,
# so Python sees one row per distinct combination instead of one per event.
FINGERPRINT_KEYS = (
    "event_type",
    "error_name",
    "type",
    "error_code",
    "level",
    "message",
    "error_message",
    "error",
    "stack",
)


def _fingerprint_sql(vendor: str) -> str:
    if vendor == "postgresql":
        return (
            "jsonb_build_array(" + ", ".join(f"properties -> '{k}'" for k in FINGERPRINT_KEYS) + ")"
        )
    # SQLite's json_extract with several paths answers a JSON array of their values.
    return "json_extract(properties, " + ", ".join(f"'$.{k}'" for k in FINGERPRINT_KEYS) + ")"


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


def error_groups(*, project: Project, start: dt.date, end: dt.date) -> tuple[list, bool]:
    """Groups of error-like events timestamped in [start, end], most frequent first, and whether
    the scan stopped at SCAN_LIMIT events.

    The database groups the newest SCAN_LIMIT error events by name and fingerprint fields, with
    counts, first/last seen and the distinct installs; Python folds those rows into fingerprints
    and fetches one sample (the newest event) per group.
    """
    conn = db.connection()
    pg = conn.vendor == "postgresql"
    predicate = error_sql(conn.vendor).replace("%", "%%")
    where = f"project_id = %s AND timestamp >= %s AND timestamp < %s AND {predicate}"
    installs = (
        "array_agg(DISTINCT NULLIF(install_id, ''))"
        if pg
        else "json_group_array(DISTINCT NULLIF(install_id, ''))"
    )
    sql = (
        f"SELECT name, f, COUNT(*), MIN(timestamp), MAX(timestamp), {installs} FROM ("
        f"SELECT name, {_fingerprint_sql(conn.vendor)} AS f, install_id, timestamp"
        f" FROM telemetry_event WHERE {where} ORDER BY timestamp DESC LIMIT {SCAN_LIMIT}"
        ") e GROUP BY name, f"
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
        rows = cursor.fetchall()
    for name, fields, count, first, last, ids in rows:
        values = _json(fields) or [None] * len(FINGERPRINT_KEYS)
        props = {k: v for k, v in zip(FINGERPRINT_KEYS, values, strict=True) if v is not None}
        kind, message, line = fingerprint_parts(name, props)
        key = hashlib.sha256(f"{kind}\0{message}\0{line}".encode()).hexdigest()[:12]
        first, last = _aware(first), _aware(last)
        g = groups.get(key)
        if g is None:
            g = groups[key] = ErrorGroup(key, kind, message, line, first_seen=first, last_seen=last)
        g.count += count
        g.first_seen = min(g.first_seen, first)
        g.last_seen = max(g.last_seen, last)
        g.installs.update(i for i in _json(ids) or () if i)
        n += count
    for g in groups.values():
        g.sample = _sample(conn, project, g, predicate)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.kind))
    return ordered, n >= SCAN_LIMIT


def _sample(conn, project: Project, group: ErrorGroup, predicate: str) -> dict:
    """The group's newest event, found through the partial index by its timestamp."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT name, properties, app_version, os FROM telemetry_event"
            f" WHERE project_id = %s AND timestamp = %s AND {predicate}",
            [project.pk, db_datetime(group.last_seen)],
        )
        for name, props, version, os_name in cursor.fetchall():
            props = _json(props)
            props = props if isinstance(props, dict) else {}
            if fingerprint_parts(name, props) == (group.kind, group.message, group.stack_line):
                return {"name": name, "app_version": version, "os": os_name, "properties": props}
    return {}
