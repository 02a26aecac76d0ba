"""Error-like events grouped by fingerprint: Baofeng error types, Pryx warn/error/fatal levels,
and any event whose name starts with "error"; fingerprint = type + message + first stack line.
"""

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from django.db.models import Q

from telemetry.analytics.periods import day_start
from telemetry.models import Event, Project

BAOFENG_ERRORS = ("flash_error", "connect_error", "window_error", "unhandled_rejection")
BAOFENG_ERRORS += ("client_error",)
LEVELS = ("warn", "warning", "error", "fatal")
SCAN_LIMIT = 50_000  # newest error-like events read per request; older ones are noted, not read


def error_filter() -> Q:
    return (
        Q(name__startswith="error")
        | Q(name__in=BAOFENG_ERRORS)
        | Q(properties__event_type__in=BAOFENG_ERRORS)
        | Q(properties__level__in=LEVELS)
    )


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
    rows = (
        Event.objects.filter(
            project=project,
            timestamp__gte=day_start(start),
            timestamp__lt=day_start(end + dt.timedelta(days=1)),
        )
        .filter(error_filter())
        .order_by("-timestamp")
        .values_list("name", "properties", "install_id", "timestamp", "app_version", "os")
    )
    groups: dict[str, ErrorGroup] = {}
    n = 0
    for name, props, install, ts, version, os_name in rows[:SCAN_LIMIT].iterator(chunk_size=2000):
        n += 1
        props = props if isinstance(props, dict) else {}
        kind, message, line = fingerprint_parts(name, props)
        key = hashlib.sha256(f"{kind}\0{message}\0{line}".encode()).hexdigest()[:12]
        g = groups.get(key)
        if g is None:
            g = groups[key] = ErrorGroup(key, kind, message, line, last_seen=ts)
            g.sample = {"name": name, "app_version": version, "os": os_name, "properties": props}
        g.count += 1
        g.first_seen = ts
        if install:
            g.installs.add(install)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.kind))
    return ordered, n >= SCAN_LIMIT
