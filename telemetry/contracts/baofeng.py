"""The Baofeng flasher contract: the log-intake worker's routes and the legacy counter's routes.

Each request becomes IncomingEvents for the one pipeline (install = session_id, name = event_type);
the flash total is read from the pipeline's per-day event counts (DailyCount), which no purge
deletes, so `/count` and `/metrics/flash-count` agree and never drop when old rows expire.
"""

import datetime as dt
import email.utils
import hashlib
import json
import logging
import re
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from telemetry.http import BodyTooLarge, BodyUnreadable, compact_json, parse_json, read_body
from telemetry.ingest import auth, pipeline, rollups
from telemetry.ingest.privacy import client_ip
from telemetry.ingest.schema import (
    INSTALL_ID_RE,
    NAME_RE,
    IncomingEvent,
    InvalidEvent,
    check_timestamp_window,
    storable,
)
from telemetry.models import DailyCount, Event, Project

log = logging.getLogger(__name__)

# The worker's messages, in the order they are checked. Each is {"ok":false,"error":<message>}.
ORIGIN_NOT_ALLOWED = "Origin not allowed"  # 403; OPTIONS answers 403 with an empty body
NOT_FOUND = "Not found"  # 404: unknown path, or a known path with another method
TOKEN_NOT_CONFIGURED = "ADMIN_TOKEN is not configured"  # noqa: S105 (a message) 503 /recent
UNAUTHORIZED = "Unauthorized"  # 401 /recent
PAYLOAD_TOO_LARGE = "Payload too large"  # 413: over 40,000 characters
INVALID_JSON = "Invalid JSON"  # 400
INVALID_FIELDS = "Invalid payload fields"  # 400
RATE_LIMITED = "Rate limited"  # 429 + Retry-After
UNAVAILABLE = "Service unavailable"  # 503 + Retry-After: database or cache down

SERVICE = "baofeng-log-intake"
MAX_CHARS = 40_000
EVENT_TYPES = {
    "flash_success",
    "flash_error",
    "connect_error",
    "window_error",
    "unhandled_rejection",
    "client_error",
}
FLASH = "flash_success"
BASELINE_PREFIX = "baseline-"
# A seeding flash (session `baseline-…`) is stored as `flash_baseline:<baseline_total>`, so the
# per-name daily counts remember the legacy total after the row itself is purged.
BASELINE_NAME = "flash_baseline:"
BASELINE_MAX = 10**48 - 1  # keeps the name within 64 characters
# Sanitising limits of the worker (CONTRACTS B3).
MESSAGE_MAX = 300
SESSION_MAX = 120
ERROR_NAME_MAX = 120
STACK_MAX = 1200
MODEL_MAX = 64
APP_VERSION_MAX = 64
LEGACY_TYPE_MAX = 40
OCCURRED_MAX = 64
LOG_LINES_KEEP = 80
LOG_LINE_MAX = 240
RECENT_DEFAULT, RECENT_MIN, RECENT_MAX = 50, 1, 200

CORS_HEADERS = {
    "Vary": "Origin",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Max-Age": "86400",
}


class Invalid(Exception):
    """The body breaks a rule: answered with INVALID_FIELDS, whatever the rule was."""


def reply(status: int, body: dict) -> HttpResponse:
    """A JSON reply byte for byte as the worker's JSON.stringify wrote it."""
    return compact_json(status, body, content_type="application/json; charset=utf-8")


def error(status: int, message: str, *, retry_after: int | None = None) -> HttpResponse:
    """The one error shape of this contract: {"ok":false,"error":<message>}."""
    response = reply(status, {"ok": False, "error": message})
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _empty(status: int) -> HttpResponse:
    response = HttpResponse(status=status)
    del response["Content-Type"]
    response["Cache-Control"] = "no-store"
    return response


def serve(request: HttpRequest, project: Project, path: str) -> HttpResponse:
    """Route one request the way the worker did: origin first, then method and exact path."""
    origin = request.META.get("HTTP_ORIGIN")
    allowed = origin is None or origin in (project.allowed_origins or [])
    if request.method == "OPTIONS":
        return _with_cors(_empty(204 if allowed else 403), origin if allowed else None)
    if not allowed:
        return error(403, ORIGIN_NOT_ALLOWED)
    handler = ROUTES.get((request.method, path))
    if handler is None:
        return _with_cors(error(404, NOT_FOUND), origin)
    try:
        response = handler(request, project)
    except pipeline.ServiceUnavailable as exc:
        response = error(503, UNAVAILABLE, retry_after=exc.retry_after)
    except DatabaseError as exc:
        log.warning("baofeng: database unavailable on /%s (%s)", path, type(exc).__name__)
        response = error(503, UNAVAILABLE, retry_after=settings.TELEMETRY_RETRY_AFTER_SECONDS)
    return _with_cors(response, origin)


def _with_cors(response: HttpResponse, origin: str | None) -> HttpResponse:
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        for name, value in CORS_HEADERS.items():
            response[name] = value
    return response


# --- writes -----------------------------------------------------------------------------------


def _event(request: HttpRequest, project: Project) -> HttpResponse:
    """POST /event: the unified envelope; a repeated flash_success answers deduped:true."""
    body = _read(request)
    if isinstance(body, HttpResponse):
        return body
    now = timezone.now()
    try:
        event = event_from_body(body, legacy=False, project=project, now=now)
    except Invalid:
        return error(400, INVALID_FIELDS)
    outcome = _run(request, project, event, now)
    if outcome.status == pipeline.LIMITED:
        return error(429, RATE_LIMITED, retry_after=outcome.retry_after)
    return reply(200, {"ok": True, "deduped": outcome.status == pipeline.DUPLICATE})


def _client_log(request: HttpRequest, project: Project) -> HttpResponse:
    """POST /client-log: the legacy error report; any event_type up to 40 characters."""
    body = _read(request)
    if isinstance(body, HttpResponse):
        return body
    now = timezone.now()
    try:
        event = event_from_body(body, legacy=True, project=project, now=now)
    except Invalid:
        return error(400, INVALID_FIELDS)
    outcome = _run(request, project, event, now)
    if outcome.status == pipeline.LIMITED:
        return error(429, RATE_LIMITED, retry_after=outcome.retry_after)
    return reply(200, {"ok": True})


def _increment(request: HttpRequest, project: Project) -> HttpResponse:
    """POST /increment {sessionId}: the old counter, now a flash_success for that session."""
    body = _read(request)
    if isinstance(body, HttpResponse):
        return body
    session = body.get("sessionId") if isinstance(body, dict) else None
    session = _text(session, SESSION_MAX)
    if session is None or not storable(session):
        return error(400, INVALID_FIELDS)
    now = timezone.now()
    event = IncomingEvent(
        install_id=_install_id(session),
        name=FLASH,
        timestamp=now,
        event_id=_flash_event_id(session),
        session_id=session if len(session) <= 64 else "",
        properties={"sessionId": session},
        dedupe_any_time=True,  # one flash per session, whenever it is reported
    )
    outcome = _run(request, project, event, now)
    if outcome.status == pipeline.LIMITED:
        return error(429, RATE_LIMITED, retry_after=outcome.retry_after)
    deduped = outcome.status == pipeline.DUPLICATE
    return reply(200, {"total": flash_count(project=project), "deduped": deduped})


def _read(request: HttpRequest) -> Any:
    """The JSON body, or the worker's 413/400; read as text with no media-type check."""
    try:
        raw = read_body(request, MAX_CHARS * 4)  # 4 bytes per character at most in UTF-8
        if len(raw) > MAX_CHARS and len(raw.decode("utf-8", errors="replace")) > MAX_CHARS:
            return error(413, PAYLOAD_TOO_LARGE)
        return parse_json(raw)
    except BodyTooLarge:
        return error(413, PAYLOAD_TOO_LARGE)
    except (BodyUnreadable, ValueError, RecursionError):
        return error(400, INVALID_JSON)


def _sanitise(body: Any, *, legacy: bool) -> dict[str, Any]:
    """The worker's field rules with the plan's stricter ones (non-empty message, valid JSON
    strings); returns the stored fields under the client's names, cut to the worker's limits."""
    if not isinstance(body, dict):
        raise Invalid
    event_type = body.get("event_type")
    if legacy:
        event_type = _text(event_type, LEGACY_TYPE_MAX)
        if event_type is None:
            raise Invalid
    elif not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise Invalid
    message = body.get("message")
    if not isinstance(message, str) or (not legacy and not message.strip()):
        raise Invalid
    occurred_at = body.get("occurred_at")
    occurred = _parse_occurred(occurred_at)
    if occurred is None:
        raise Invalid
    session = _text(body.get("session_id"), SESSION_MAX)
    if event_type == FLASH and session is None:
        raise Invalid
    record = {
        "event_type": event_type,
        "occurred_at": _trim(occurred_at.strip(), OCCURRED_MAX),
        "message": _trim(message.strip(), MESSAGE_MAX),
        "session_id": session,
        "error_name": _text(body.get("error_name"), ERROR_NAME_MAX),
        "stack": _text(body.get("stack"), STACK_MAX),
        "model": _text(body.get("model"), MODEL_MAX) or "unknown",
        "write_mode": _flag(body.get("write_mode")),
        "connected": _flag(body.get("connected")),
        "app_version": _text(body.get("app_version"), APP_VERSION_MAX) or "unknown",
        "log_lines": _log_lines(body.get("log_lines_json")),
        "metadata": _metadata(body.get("metadata_json")),
    }
    if not storable(record):
        raise Invalid
    return {**record, "_occurred": occurred}


def event_from_body(
    body: Any, *, legacy: bool, project: Project, now: dt.datetime
) -> IncomingEvent:
    """The event `POST /event` (or `/client-log` when `legacy`) stores for `body` received at
    `now`; raises Invalid. The D1 importer calls it too, with the row's receipt time as `now`."""
    record = _sanitise(body, legacy=legacy)
    occurred = record.pop("_occurred")
    try:
        check_timestamp_window(occurred, now=now, retention_days=project.retention_days)
    except InvalidEvent:
        occurred = now  # a clock far off: keep the client's string, file it under arrival
    session = record["session_id"]
    return IncomingEvent(
        install_id=_install_id(session) if session else "",
        name=_stored_name(record),
        timestamp=occurred,
        # Only successes are idempotent: the same session's flash is one flash, errors repeat.
        event_id=_flash_event_id(session) if record["event_type"] == FLASH else None,
        session_id=session if session and len(session) <= 64 else "",
        app_version=record["app_version"],
        os="",
        properties=record,
        dedupe_any_time=record["event_type"] == FLASH,  # one flash per session, at any time
    )


def _run(
    request: HttpRequest, project: Project, event: IncomingEvent, now: dt.datetime
) -> pipeline.Outcome:
    result = pipeline.ingest(project=project, events=[event], client_ip=client_ip(request), now=now)
    return result.outcomes[0]


# --- reads ------------------------------------------------------------------------------------


def flash_count(*, project: Project) -> int:
    """The worker's total: flash_success events not seeded as `baseline-…`, plus the largest
    `metadata.baseline_total` among the seeding events (the legacy counter's total at cut-over).

    Read from DailyCount, the lifetime per-day counts the pipeline keeps and no purge deletes:
    a lifetime counter must not drop when the retention purge removes old rows.
    """
    rollups.fold_rollups()  # a flash stored a moment ago is part of the total
    flashes, seeded = 0, 0
    rows = (
        DailyCount.objects.filter(project=project)
        .filter(Q(name=FLASH) | Q(name__startswith=BASELINE_NAME))
        .values("name")
        .annotate(n=Sum("events"))
        .values_list("name", "n")
    )
    for name, n in rows:
        if name == FLASH:
            flashes = n
        elif name[len(BASELINE_NAME) :].isdigit():
            seeded = max(seeded, int(name[len(BASELINE_NAME) :]))
    return flashes + seeded


def _flash_count(request: HttpRequest, project: Project) -> HttpResponse:
    return reply(200, {"ok": True, "total": flash_count(project=project)})


def _count(request: HttpRequest, project: Project) -> HttpResponse:
    return reply(200, {"total": flash_count(project=project)})


def _health(request: HttpRequest, project: Project) -> HttpResponse:
    return reply(200, {"ok": True, "service": SERVICE})


def _recent(request: HttpRequest, project: Project) -> HttpResponse:
    """GET /recent: newest failure reports (everything but flash_success), operator token only."""
    if not project.operator_token_hash:
        return error(503, TOKEN_NOT_CONFIGURED)
    header = request.META.get("HTTP_AUTHORIZATION", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    if not auth.operator_token_matches(project, token):
        return error(401, UNAUTHORIZED)
    try:
        limit = int(request.GET.get("limit", RECENT_DEFAULT))
    except ValueError:
        limit = RECENT_DEFAULT
    limit = min(RECENT_MAX, max(RECENT_MIN, limit))
    events = (
        Event.objects.filter(project=project)
        .exclude(name=FLASH)
        .exclude(name__startswith=BASELINE_NAME)
        .order_by("-received_at", "-id")[:limit]
    )
    rows = [_recent_row(e) for e in events]
    return reply(200, {"ok": True, "count": len(rows), "rows": rows})


def _recent_row(event: Event) -> dict[str, Any]:
    p = event.properties or {}
    return {
        "id": str(event.pk),
        "receivedAtMs": int(event.received_at.timestamp() * 1000),
        "occurredAt": p.get("occurred_at"),
        "eventType": p.get("event_type", event.name),
        "message": p.get("message"),
        "errorName": p.get("error_name"),
        "model": p.get("model"),
        "writeMode": bool(p.get("write_mode")),
        "connected": bool(p.get("connected")),
        "appVersion": p.get("app_version"),
        "pageUrl": None,  # the worker never stored it; we never take it
        "logLines": p.get("log_lines") or [],
    }


ROUTES = {
    ("POST", "event"): _event,
    ("POST", "client-log"): _client_log,
    ("GET", "metrics/flash-count"): _flash_count,
    ("GET", "recent"): _recent,
    ("GET", "health"): _health,
    ("GET", "count"): _count,
    ("POST", "increment"): _increment,
}


# --- field helpers ----------------------------------------------------------------------------


def _trim(value: str, limit: int) -> str:
    """The worker's cut: a string over `limit` keeps its start and ends in '...' (≤ limit)."""
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _text(value: Any, limit: int) -> str | None:
    """An optional string field: non-strings and blanks are absent, long ones are cut."""
    if not isinstance(value, str) or not value.strip():
        return None
    return _trim(value.strip(), limit)


def _flag(value: Any) -> int:
    """write_mode/connected: exactly 0 or 1, anything else is 0 (the worker's rule)."""
    return value if type(value) is int and value in (0, 1) else 0


def _log_lines(value: Any) -> list[str]:
    """log_lines_json: absent is []; otherwise a JSON string of an array, the last 80 lines kept."""
    if value is None:
        return []
    parsed = _json_string(value)
    if not isinstance(parsed, list):
        raise Invalid
    lines = [v if isinstance(v, str) else json.dumps(v) for v in parsed[-LOG_LINES_KEEP:]]
    return [_trim(line, LOG_LINE_MAX) for line in lines]


def _metadata(value: Any) -> dict[str, Any]:
    """metadata_json: absent is {}; otherwise a JSON string of an object."""
    if value is None:
        return {}
    parsed = _json_string(value)
    if not isinstance(parsed, dict):
        raise Invalid
    return parsed


def _json_string(value: Any) -> Any:
    if not isinstance(value, str) or len(value) > MAX_CHARS:
        raise Invalid
    try:
        return parse_json(value.encode())
    except (ValueError, RecursionError):
        raise Invalid from None


def _parse_occurred(value: Any) -> dt.datetime | None:
    """What Date.parse reads in practice: ISO 8601 (no offset = UTC) or RFC 2822 dates."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        return None


def _install_id(session: str) -> str:
    """The session id when it fits the platform's install-id rule, else a stable 32-hex id."""
    if INSTALL_ID_RE.fullmatch(session):
        return session
    return hashlib.sha256(session.encode()).hexdigest()[:32]


def _flash_event_id(session: str) -> str:
    """One event id per session: the pipeline's dedupe is the worker's partial unique index."""
    return "fs_" + hashlib.sha256(f"{FLASH}:{session}".encode()).hexdigest()[:40]


def _stored_name(record: dict[str, Any]) -> str:
    """The event name: the event type, except for a seeding flash, which carries its total."""
    session = record["session_id"] or ""
    if record["event_type"] != FLASH or not session.startswith(BASELINE_PREFIX):
        return _event_name(record["event_type"])
    value = record["metadata"].get("baseline_total")
    total = 0
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        total = BASELINE_MAX if value >= BASELINE_MAX else int(value)  # NaN > 0 is False
    return f"{BASELINE_NAME}{total}"


_NOT_NAME = re.compile(r"[^a-z0-9_.:-]+")


def _event_name(event_type: str) -> str:
    """event_type as an event name; legacy types are lowercased and cleaned, else client_log."""
    name = _NOT_NAME.sub("_", event_type.lower())[:64]
    return name if NAME_RE.fullmatch(name) else "client_log"
