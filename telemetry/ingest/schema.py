"""The internal event every front door produces, and the checks every event passes.

Front doors translate their wire format into `IncomingEvent`; `validate_event` applies the limits
of the native contract and the project's property schema, raising `InvalidEvent` naming the field.
"""

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from telemetry.models import Project

INSTALL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
MAX_SHORT = 64
MAX_PROPERTIES = 50
MAX_DEPTH = 3
MAX_STRING = 1000
FUTURE_SLACK = dt.timedelta(days=1)


class InvalidEvent(ValueError):
    """An event that breaks a rule; `field` names the offending field for the caller."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(slots=True)
class IncomingEvent:
    install_id: str
    name: str
    timestamp: dt.datetime
    event_id: str | None = None
    session_id: str = ""
    app_version: str = ""
    os: str = ""
    properties: dict[str, Any] = field(default_factory=dict)


def parse_timestamp(value: Any, *, field_name: str = "timestamp") -> dt.datetime:
    """ISO 8601 with an explicit offset (`Z` or `+hh:mm`), as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        raise InvalidEvent(field_name, "required, an ISO 8601 string with offset")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(field_name, "not ISO 8601") from None
    if parsed.tzinfo is None:
        raise InvalidEvent(field_name, "needs a UTC offset (Z or +hh:mm)")
    return parsed.astimezone(dt.UTC)


def check_timestamp_window(
    timestamp: dt.datetime, *, now: dt.datetime, retention_days: int, field_name: str = "timestamp"
) -> None:
    if timestamp > now + FUTURE_SLACK:
        raise InvalidEvent(field_name, "more than one day in the future")
    if timestamp < now - dt.timedelta(days=retention_days):
        raise InvalidEvent(field_name, f"older than the retention window ({retention_days} days)")


def storable(value: Any, max_depth: int = 16) -> bool:
    """No NUL, no lone surrogate (no database text column holds them) and no absurd nesting."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return False
        if isinstance(item, str):
            if "\x00" in item or any("\ud800" <= ch <= "\udfff" for ch in item):
                return False
        elif isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _check_strings(value: Any, path: str) -> None:
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise InvalidEvent(path, f"string longer than {MAX_STRING} characters")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(v, f"{path}[{i}]")


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def validate_properties(properties: Any, *, project: Project) -> dict[str, Any]:
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise InvalidEvent("properties", "must be an object")
    if len(properties) > MAX_PROPERTIES:
        raise InvalidEvent("properties", f"more than {MAX_PROPERTIES} keys")
    if _depth(properties) > MAX_DEPTH:
        raise InvalidEvent("properties", f"nested deeper than {MAX_DEPTH} levels")
    _check_strings(properties, "properties")
    schema = project.property_schema or {}
    for key, value in properties.items():
        rule = schema.get(key)
        path = f"properties.{key}"
        if rule is None:
            if project.strict:
                raise InvalidEvent(path, "not in the project's schema")
            continue
        kind = rule.get("type")
        if kind and value is not None:
            allowed = _TYPES.get(kind, ())
            # bool is an int in Python; a schema asking for a number does not mean True.
            if not isinstance(value, allowed) or (kind != "boolean" and isinstance(value, bool)):
                raise InvalidEvent(path, f"must be of type {kind}")
        max_length = rule.get("max_length")
        if max_length is not None and isinstance(value, str) and len(value) > max_length:
            raise InvalidEvent(path, f"longer than {max_length} characters")
        enum = rule.get("enum")
        if enum is not None and value not in enum:
            raise InvalidEvent(path, "not one of the allowed values")
    return properties


def _short(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidEvent(name, "must be a string")
    if len(value) > MAX_SHORT:
        raise InvalidEvent(name, f"longer than {MAX_SHORT} characters")
    return value


def event_from_native(item: Any, *, project: Project, now: dt.datetime) -> IncomingEvent:
    """Validate one native-API event object (CONTRACTS A3) into an IncomingEvent."""
    if not isinstance(item, dict):
        raise InvalidEvent("event", "must be a JSON object")
    if not storable(item):
        raise InvalidEvent("event", "text with NUL or unpaired surrogates, or nested too deep")
    unknown = set(item) - _NATIVE_FIELDS
    if unknown:
        raise InvalidEvent(sorted(unknown)[0], "unknown field")
    install_id = item.get("install_id")
    if not isinstance(install_id, str) or not INSTALL_ID_RE.fullmatch(install_id):
        raise InvalidEvent("install_id", "required, 8-64 characters of A-Z a-z 0-9 _ -")
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidEvent("name", "required, lowercase, matching ^[a-z][a-z0-9_.:-]{0,63}$")
    timestamp = parse_timestamp(item.get("timestamp"))
    check_timestamp_window(timestamp, now=now, retention_days=project.retention_days)
    event_id = item.get("event_id")
    if event_id is not None and (
        not isinstance(event_id, str) or not EVENT_ID_RE.fullmatch(event_id)
    ):
        raise InvalidEvent("event_id", "8-64 characters of A-Z a-z 0-9 _ -")
    return IncomingEvent(
        install_id=install_id,
        name=name,
        timestamp=timestamp,
        event_id=event_id,
        session_id=_short(item.get("session_id"), "session_id"),
        app_version=_short(item.get("app_version"), "app_version"),
        os=_short(item.get("os"), "os"),
        properties=validate_properties(item.get("properties"), project=project),
    )


_NATIVE_FIELDS = {
    "install_id",
    "name",
    "timestamp",
    "event_id",
    "session_id",
    "app_version",
    "os",
    "properties",
}
