"""Error-like events grouped by fingerprint: Baofeng error types, Pryx warn/error/fatal levels,
and any event whose name starts with "error"; fingerprint = type + message + first stack line.
"""

import datetime as dt
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from telemetry.analytics import active, db
from telemetry.analytics.periods import as_date, day_start, db_datetime, today, utc_date_sql
from telemetry.models import ErrorDay, Project

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


def error_groups(
    *, project: Project, start: dt.date, end: dt.date, now: dt.datetime | None = None
) -> tuple[list, bool]:
    """Groups of error-like events timestamped in [start, end], most frequent first, and whether
    the raw scan stopped at SCAN_LIMIT events.

    Closed days come from their ErrorDay rows while those match the day's event count; today,
    and any closed day without a matching row (late events, not yet counted), are grouped from
    the raw events, the newest SCAN_LIMIT of them. One sample (the newest event) per group.
    """
    conn = db.connection()
    predicate = error_sql(conn.vendor).replace("%", "%%")
    yesterday = today(now or timezone.now()) - dt.timedelta(days=1)
    stored = stored_days(project=project, first=start, last=min(end, yesterday))
    groups: dict[str, ErrorGroup] = {}
    for rows in stored.values():
        for key, kind, message, line, count, first, last, installs in rows:
            if key:
                _add(groups, key, (kind, message, line), count, first, last, installs)
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    n = 0
    for _day, name, fields, count, first, last, ids in _scan(
        conn, project, _spans([d for d in days if d not in stored]), limit=SCAN_LIMIT
    ):
        parts = parts_of(name, fields)
        _add(groups, fingerprint_key(parts), parts, count, first, last, _json(ids) or ())
        n += count
    for g in groups.values():
        g.sample = _sample(conn, project, g, predicate)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.kind))
    return ordered, n >= SCAN_LIMIT


def fingerprint_key(parts: tuple[str, str, str]) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def parts_of(name: str, fields) -> tuple[str, str, str]:
    """fingerprint_parts of one scanned row (its fingerprint properties as one JSON array)."""
    values = _json(fields) or [None] * len(FINGERPRINT_KEYS)
    props = {k: v for k, v in zip(FINGERPRINT_KEYS, values, strict=True) if v is not None}
    return fingerprint_parts(name, props)


def _add(groups: dict, key: str, parts: tuple, count: int, first, last, installs) -> None:
    first, last = _aware(first), _aware(last)
    g = groups.get(key)
    if g is None:
        g = groups[key] = ErrorGroup(key, *parts, first_seen=first, last_seen=last)
    g.count += count
    g.first_seen = min(g.first_seen, first)
    g.last_seen = max(g.last_seen, last)
    g.installs.update(i for i in installs if i)


def stored_days(*, project: Project, first: dt.date, last: dt.date) -> dict[dt.date, list]:
    """{day: its ErrorDay rows as (key, kind, message, stack line, events, first seen, last
    seen, installs)} for the days of [first, last] whose rows still match the day's event count
    and still have their raw events (on or after the oldest activity day)."""
    oldest = active.raw_boundary(project=project)
    if oldest is None or max(first, oldest) > last:
        return {}
    first = max(first, oldest)
    counts = active.daily_events(project=project, first=first, last=last)
    out: dict[dt.date, list] = defaultdict(list)
    stale = set()
    for day, day_events, *row in ErrorDay.objects.filter(
        project=project, day__gte=first, day__lte=last
    ).values_list(
        "day",
        "day_events",
        "key",
        "kind",
        "message",
        "stack_line",
        "events",
        "first_seen",
        "last_seen",
        "installs",
    ):
        if day_events != counts.get(day, 0):
            stale.add(day)
        out[day].append(row)
    return {d: rows for d, rows in out.items() if d not in stale}


def _spans(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Sorted days as runs of consecutive days, [first, last] each."""
    spans: list[list[dt.date]] = []
    for day in sorted(days):
        if spans and spans[-1][1] + dt.timedelta(days=1) == day:
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return [(a, b) for a, b in spans]


def _scan(conn, project: Project, spans, *, limit: int | None = None, by_day: bool = False):
    """Error-like events of the day `spans`, grouped in the database by name and fingerprint
    fields (and UTC day with `by_day`): (day or None, name, fields, count, first, last, install
    ids) rows. With `limit`, only the newest `limit` events are grouped."""
    if not spans:
        return []
    pg = conn.vendor == "postgresql"
    predicate = error_sql(conn.vendor).replace("%", "%%")
    # One OR of ranges: PostgreSQL prunes the partitions outside every range.
    ranges = " OR ".join(["(timestamp >= %s AND timestamp < %s)"] * len(spans))
    where = f"project_id = %s AND ({ranges}) AND {predicate}"
    params: list = [project.pk]
    for a, b in spans:
        params += [db_datetime(day_start(a)), db_datetime(day_start(b + dt.timedelta(days=1)))]
    installs = (
        "array_agg(DISTINCT NULLIF(install_id, ''))"
        if pg
        else "json_group_array(DISTINCT NULLIF(install_id, ''))"
    )
    day = f"{utc_date_sql('timestamp')}" if by_day else "NULL"
    tail = f" ORDER BY timestamp DESC LIMIT {int(limit)}" if limit else ""
    sql = (
        f"SELECT d, name, f, COUNT(*), MIN(timestamp), MAX(timestamp), {installs} FROM ("
        f"SELECT {day} AS d, name, {_fingerprint_sql(conn.vendor)} AS f, install_id, timestamp"
        f" FROM telemetry_event WHERE {where}{tail}"
        ") e GROUP BY d, name, f"
    )
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def counted_days(*, project: Project, days: list[dt.date]) -> dict[dt.date, list[ErrorGroup]]:
    """Every error group of each of `days`, grouped from the raw events (no scan limit): what
    an ErrorDay row holds. Days without error-like events are absent."""
    conn = db.connection()
    out: dict[dt.date, dict[str, ErrorGroup]] = defaultdict(dict)
    for day, name, fields, count, first, last, ids in _scan(
        conn, project, _spans(days), by_day=True
    ):
        parts = parts_of(name, fields)
        _add(out[as_date(day)], fingerprint_key(parts), parts, count, first, last, _json(ids) or ())
    return {d: list(groups.values()) for d, groups in out.items()}


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
