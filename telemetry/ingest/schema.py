"""The internal event every front door produces, and the checks every event passes.

Front doors translate their wire format into `IncomingEvent`; `validate_event` applies the limits
of the native contract and the project's property schema, raising `InvalidEvent` naming the field.
"""

import datetime as dt
import functools
import re
from dataclasses import dataclass, field, fields
from typing import Any

from django.core.validators import RegexValidator
from rest_framework import serializers

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
    # The dedupe key is (event_id, timestamp), as a retry resends the same timestamp. A front
    # door whose id must stay unique whatever the time (a flash per session, an id stamped with
    # the arrival time) sets this: the store then looks for the id on every day first.
    dedupe_any_time: bool = False


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
    timestamp: dt.datetime,
    *,
    now: dt.datetime,
    retention_days: int | None,
    field_name: str = "timestamp",
) -> None:
    """At most a day ahead, and within retention unless `retention_days` is None (imports)."""
    if timestamp > now + FUTURE_SLACK:
        raise InvalidEvent(field_name, "more than one day in the future")
    if retention_days is not None and timestamp < now - dt.timedelta(days=retention_days):
        raise InvalidEvent(field_name, f"older than the retention window ({retention_days} days)")


# NUL or a lone UTF-16 surrogate: one regex scan, not a Python loop over every character.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable_text(text: str) -> bool:
    # An ASCII string (a flag CPython keeps: no scan) cannot hold a surrogate, only a NUL.
    if text.isascii():
        return "\x00" in text
    return _UNSTORABLE.search(text) is not None


def storable(value: Any, max_depth: int = 16) -> bool:
    """No NUL, no lone surrogate (no database text column holds them) and no absurd nesting."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return False
        if isinstance(item, str):
            if _unstorable_text(item):
                return False
        elif isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def storable_scalars(*values: Any) -> bool:
    """`storable` for scalars, such as a database row's columns: no string among them holds NUL
    or a lone surrogate (no walk: an importer asks this of every row)."""
    return not any(isinstance(value, str) and _unstorable_text(value) for value in values)


def storable_json(text: str, *, depth: int = 1, max_depth: int = 16) -> bool:
    """Whether what `json.loads(text)` returns, placed at `depth` in a value, is surely
    storable, read off the text in C: no NUL or lone surrogate in it and no `\\u` escape that
    could make one, and fewer brackets than the levels left. False only means "not sure": run
    `storable` on the value (the importers take this shortcut for JSON kept as text)."""
    return (
        "\\u" not in text
        and not _unstorable_text(text)
        and text.count("{") + text.count("[") <= max_depth - depth
    )


def _too_deep(value: Any, levels: int) -> bool:
    """Whether objects and arrays nest more than `levels` deep; looks no further than that,
    so any nesting the JSON parser accepted is answered without deep recursion. Scalars are
    passed over, not called for: most properties are flat."""
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    if levels == 0:
        return True
    inner = [v for v in value if isinstance(v, dict | list)]
    return any(_too_deep(v, levels - 1) for v in inner)


def _check_strings(value: Any, path: str) -> None:
    """No string longer than MAX_STRING; the error names its path (`properties.a[2].b`), which
    is written out only for a container or the string that fails."""
    if isinstance(value, dict):
        pairs, step = value.items(), "{}.{}"
    elif isinstance(value, list):
        pairs, step = enumerate(value), "{}[{}]"
    else:
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise InvalidEvent(path, f"string longer than {MAX_STRING} characters")
        return
    for key, v in pairs:
        if isinstance(v, str):
            if len(v) > MAX_STRING:
                raise InvalidEvent(
                    step.format(path, key), f"string longer than {MAX_STRING} characters"
                )
        elif isinstance(v, dict | list):
            _check_strings(v, step.format(path, key))


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
    # Most properties are flat: one pass over the values settles them, and only an object or
    # array among them takes the full walks (nesting first, then strings in document order).
    nested = too_long = None
    for key, value in properties.items():
        if isinstance(value, str):
            if too_long is None and len(value) > MAX_STRING:
                too_long = key
        elif isinstance(value, dict | list):
            nested = key
            break
    if nested is not None:
        if _too_deep(properties, MAX_DEPTH):
            raise InvalidEvent("properties", f"nested deeper than {MAX_DEPTH} levels")
        _check_strings(properties, "properties")
    elif too_long is not None:
        raise InvalidEvent(f"properties.{too_long}", f"string longer than {MAX_STRING} characters")
    schema = project.property_schema
    if not schema and not project.strict:
        return properties
    schema = schema or {}
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


class NativeEventSerializer(serializers.Serializer):
    """The native event, declared once: `event_from_native` validates by these fields, in this
    order, with these messages, and the OpenAPI schema is generated from the same class.

    DRF's own `is_valid` is not run on the hot path: `_RULES` below reads the declaration once
    and applies it to the parsed JSON directly (measured several times cheaper per event).
    """

    install_id = serializers.RegexField(
        INSTALL_ID_RE.pattern,
        error_messages={"invalid": "required, 8-64 characters of A-Z a-z 0-9 _ -"},
        help_text="The pseudonymous install id the client generated.",
    )
    name = serializers.RegexField(
        NAME_RE.pattern,
        error_messages={"invalid": f"required, lowercase, matching {NAME_RE.pattern}"},
        help_text="Event name, e.g. app.start.",
    )
    timestamp = serializers.DateTimeField(
        help_text="ISO 8601 with offset, within retention and at most a day ahead. A retry must"
        " resend the same timestamp: (event_id, timestamp) is the dedupe key.",
    )
    event_id = serializers.RegexField(
        EVENT_ID_RE.pattern,
        required=False,
        error_messages={"invalid": "8-64 characters of A-Z a-z 0-9 _ -"},
        help_text="Idempotency key: a copy with the same id and timestamp is stored once.",
    )
    session_id = serializers.CharField(max_length=MAX_SHORT, required=False)
    app_version = serializers.CharField(max_length=MAX_SHORT, required=False)
    os = serializers.CharField(max_length=MAX_SHORT, required=False)
    properties = serializers.DictField(
        required=False,
        help_text=f"≤ {MAX_PROPERTIES} keys, nesting ≤ {MAX_DEPTH}, strings ≤ {MAX_STRING}"
        " characters; checked against the project's property schema.",
    )


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    kind: str  # "pattern", "text", "timestamp" or "object"
    pattern: re.Pattern | None
    max_length: int | None
    message: str


def _rules(serializer: type[serializers.Serializer]) -> tuple[_Rule, ...]:
    rules = []
    for name, f in serializer().fields.items():
        # RegexValidator keeps a lazy proxy; the hot path calls the compiled pattern itself.
        pattern = next(
            (
                re.compile(v.regex.pattern, v.regex.flags)
                for v in f.validators
                if isinstance(v, RegexValidator)
            ),
            None,
        )
        if pattern is not None:
            kind = "pattern"
        elif isinstance(f, serializers.DateTimeField):
            kind = "timestamp"
        elif isinstance(f, serializers.DictField):
            kind = "object"
        else:
            kind = "text"
        rules.append(
            _Rule(
                name,
                kind,
                pattern,
                getattr(f, "max_length", None),
                f.error_messages.get("invalid", ""),
            )
        )
    return tuple(rules)


_RULES = _rules(NativeEventSerializer)
_NATIVE_FIELDS = frozenset(rule.name for rule in _RULES)


def event_from_native(
    item: Any,
    *,
    project: Project,
    now: dt.datetime,
    history: bool = False,
    plain_text: bool = False,
) -> IncomingEvent:
    """Validate one native-API event object (CONTRACTS A3) into an IncomingEvent.

    `history` (the importer) lifts the retention bound; the importer keeps older events as
    anonymous aggregates itself. `plain_text` says the JSON body it came from holds no escape
    that could make NUL or a lone surrogate (telemetry.http.plain_text): the per-string scan is
    then skipped; nesting is bounded by the checks below either way."""
    if not isinstance(item, dict):
        raise InvalidEvent("event", "must be a JSON object")
    if not plain_text and not storable(item):
        raise InvalidEvent("event", "text with NUL or unpaired surrogates, or nested too deep")
    if not _NATIVE_FIELDS.issuperset(item):
        raise InvalidEvent(sorted(item.keys() - _NATIVE_FIELDS)[0], "unknown field")
    values: list[Any] = []  # in _RULES' order, which is IncomingEvent's (checked below)
    for rule in _RULES:
        value = item.get(rule.name)
        if rule.kind == "pattern":
            if value is None and rule.name == "event_id":
                values.append(None)
                continue
            if not isinstance(value, str) or not rule.pattern.fullmatch(value):
                raise InvalidEvent(rule.name, rule.message)
        elif rule.kind == "timestamp":
            value = parse_timestamp(value, field_name=rule.name)
            retention = None if history else project.retention_days
            oldest, newest = _window(now, retention)
            if not oldest <= value <= newest:
                check_timestamp_window(value, now=now, retention_days=retention)  # says why
        elif rule.kind == "object":
            value = validate_properties(value, project=project)
        elif value is None:
            value = ""
        elif not isinstance(value, str):
            raise InvalidEvent(rule.name, "must be a string")
        elif len(value) > rule.max_length:
            raise InvalidEvent(rule.name, f"longer than {rule.max_length} characters")
        values.append(value)
    return IncomingEvent(*values)


# event_from_native builds IncomingEvent from the declaration's fields by position.
if [rule.name for rule in _RULES] != [f.name for f in fields(IncomingEvent)][: len(_RULES)]:
    raise RuntimeError("NativeEventSerializer's fields must come in IncomingEvent's order")


@functools.lru_cache(maxsize=64)
def _window(now: dt.datetime, retention_days: int | None) -> tuple[dt.datetime, dt.datetime]:
    """The timestamps check_timestamp_window accepts, computed once per request, not per event."""
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    if retention_days is not None:
        oldest = now - dt.timedelta(days=retention_days)
    return oldest, now + FUTURE_SLACK
