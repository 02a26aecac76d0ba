"""The Pryx contract: the status doc's telemetry API (ingest, batch, batch status, query), working,
plus the Go runtime's JSON log batches at /api/v1/logs, all stored through the one pipeline.

Mapping: install = device_id, name = category (or "telemetry"; "log" for log entries), event_id =
correlation_id; every field the client sent is kept in `properties` under its own name.
"""

import datetime as dt
import hashlib
import logging
import re
import secrets
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from telemetry.http import BodyTooLarge, BodyUnreadable, compact_json, parse_json, read_body
from telemetry.ingest import auth, pipeline
from telemetry.ingest.privacy import client_ip, redact
from telemetry.ingest.schema import (
    EVENT_ID_RE,
    INSTALL_ID_RE,
    NAME_RE,
    IncomingEvent,
    InvalidEvent,
    check_timestamp_window,
    storable,
    validate_properties,
)
from telemetry.models import Batch, Event, Project

log = logging.getLogger(__name__)

# Exact messages, in the order they are checked. Each is {"error": <message>} unless noted.
NOT_FOUND = "404 Not Found"  # text/plain, as Hono answers an unknown route or method
UNAUTHORIZED = "unauthorized"  # 401: Authorization malformed or empty; absent on a strict project
FORBIDDEN = "forbidden"  # 403: not an ingest key of this project (query: not the operator token)
PAYLOAD_TOO_LARGE = "Payload too large"  # 413: over MAX_BODY bytes
INVALID_JSON = "Invalid JSON"  # 400
NO_EVENTS = "No events provided"  # 400 ingest: []
INVALID_EVENT = "Invalid event: {detail}"  # 400 ingest: a single object that fails validation
INVALID_BATCH = "Invalid batch: events must be a non-empty array"  # 400
BATCH_TOO_LARGE = "Batch too large: maximum 1000 events per batch"  # 400
INVALID_BATCH_ID = "Invalid batch: batch_id must be 1-64 characters of A-Z a-z 0-9 _ . : -"  # 400
INVALID_LOGS = "Invalid logs: logs must be an array"  # 400
TOO_MANY_LOGS = "Too many logs: maximum 1000 entries per request"  # 400
INVALID_QUERY = "Invalid query: {name} must be an integer"  # 400
INVALID_FILTER = "Invalid query: {name} must be text without NUL"  # 400
BATCH_NOT_FOUND = "Batch not found"  # 404
SLOW_DOWN = "slow_down"  # 429 + Retry-After: every valid event was over a rate limit
UNAVAILABLE = "telemetry_store_unavailable"  # 503 + Retry-After: database or cache down
# Per-item errors ("<field>: <rule>", from InvalidEvent) go in "results"/"rejected" by index.

MAX_BODY = 5 * 1024 * 1024
MAX_BATCH = 1000
MAX_RESULTS = 25
QUERY_DEFAULT, QUERY_MAX = 100, 1000
# HEAD's allowlist: these keys must be scalars; other keys are kept too (see the docs).
SCALAR_KEYS = (
    "correlation_id",
    "timestamp",
    "level",
    "category",
    "error_code",
    "error_message",
    "duration_ms",
    "model_id",
    "token_count",
    "cost_usd",
    "tool_name",
    "status",
    "device_id",
    "session_id",
    "version",
)
QUERY_FILTERS = ("level", "category", "device_id", "session_id")
DEFAULT_NAME = "telemetry"
LOG_NAME = "log"


def reply(status: int, body: dict) -> HttpResponse:
    """A JSON reply as Hono's c.json wrote it: compact, CORS open to every origin."""
    response = compact_json(status, body)
    response["Access-Control-Allow-Origin"] = "*"
    return response


def error(status: int, message: str, *, retry_after: int | None = None) -> HttpResponse:
    """The one error shape of this contract: {"error": <message>}."""
    response = reply(status, {"error": message})
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _not_found() -> HttpResponse:
    response = HttpResponse(NOT_FOUND, status=404, content_type="text/plain; charset=UTF-8")
    response["Cache-Control"] = "no-store"
    response["Access-Control-Allow-Origin"] = "*"
    return response


def _preflight(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(status=204)
    del response["Content-Type"]
    response["Cache-Control"] = "no-store"
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Methods"] = "GET,HEAD,PUT,POST,DELETE,PATCH"
    requested = request.META.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
    if requested:
        response["Access-Control-Allow-Headers"] = requested
        response["Vary"] = "Access-Control-Request-Headers"
    return response


def serve(request: HttpRequest, project: Project, path: str) -> HttpResponse:
    if request.method == "OPTIONS":
        return _preflight(request)
    handler, arg = _route(request.method, path)
    if handler is None:
        return _not_found()
    try:
        return handler(request, project, *arg)
    except pipeline.ServiceUnavailable as exc:
        return error(503, UNAVAILABLE, retry_after=exc.retry_after)
    except DatabaseError as exc:
        log.warning("pryx: database unavailable on /%s (%s)", path, type(exc).__name__)
        return error(503, UNAVAILABLE, retry_after=settings.TELEMETRY_RETRY_AFTER_SECONDS)


def _route(method: str, path: str):
    if method == "POST" and path == "api/telemetry/ingest":
        return _ingest, ()
    if method == "POST" and path == "api/telemetry/batch":
        return _batch, ()
    if method == "GET" and path == "api/telemetry/query":
        return _query, ()
    if method == "POST" and path == "api/v1/logs":
        return _logs, ()
    prefix = "api/telemetry/batch/"
    batch_id = path[len(prefix) :] if path.startswith(prefix) else ""
    if method == "GET" and batch_id and "/" not in batch_id:
        return _batch_status, (batch_id,)
    return None, ()


# --- authentication ---------------------------------------------------------------------------


def _bearer(request: HttpRequest) -> str | None:
    """The token of `Authorization: Bearer <token>`; "" when the header is malformed or empty."""
    header = request.META.get("HTTP_AUTHORIZATION")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _check_ingest_key(request: HttpRequest, project: Project) -> HttpResponse | None:
    """Optional Bearer key: a header present must carry an ingest key of this project; no header
    is anonymous, accepted unless the project is strict (HEAD's mode: key required)."""
    token = _bearer(request)
    if token is None:
        return error(401, UNAUTHORIZED) if project.strict else None
    if not token:
        return error(401, UNAUTHORIZED)
    owner = auth.project_for_key(token)
    if owner is None or owner.pk != project.pk:
        return error(403, FORBIDDEN)
    return None


def _check_operator(request: HttpRequest, project: Project) -> HttpResponse | None:
    """Reading events back needs the operator token: ingest keys ship inside every client."""
    token = _bearer(request)
    if not token:
        return error(401, UNAUTHORIZED)
    if not auth.operator_token_matches(project, token):
        return error(403, FORBIDDEN)
    return None


# --- writes -----------------------------------------------------------------------------------


def _read(request: HttpRequest) -> Any:
    try:
        return parse_json(read_body(request, MAX_BODY))
    except BodyTooLarge:
        return error(413, PAYLOAD_TOO_LARGE)
    except (BodyUnreadable, ValueError, RecursionError):
        return error(400, INVALID_JSON)


def _ingest(request: HttpRequest, project: Project) -> HttpResponse:
    """POST /api/telemetry/ingest: one event object or an array of them."""
    refused = _check_ingest_key(request, project)
    if refused:
        return refused
    body = _read(request)
    if isinstance(body, HttpResponse):
        return body
    if isinstance(body, list) and not body:
        return error(400, NO_EVENTS)
    now = timezone.now()
    if not isinstance(body, list):
        try:
            event = _event(body, project=project, now=now)
        except InvalidEvent as exc:
            return error(400, INVALID_EVENT.format(detail=exc))
        return _answer(request, project, [event], [0], [], total=1, now=now)
    events, positions, rejected = _validate(body, project=project, now=now)
    return _answer(request, project, events, positions, rejected, total=len(body), now=now)


def _logs(request: HttpRequest, project: Project) -> HttpResponse:
    """POST /api/v1/logs: the runtime's {service, logs: [{timestamp, level, message, fields}]}."""
    refused = _check_ingest_key(request, project)
    if refused:
        return refused
    body = _read(request)
    if isinstance(body, HttpResponse):
        return body
    entries = body.get("logs") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return error(400, INVALID_LOGS)
    if len(entries) > MAX_BATCH:
        return error(400, TOO_MANY_LOGS)
    now = timezone.now()
    service = body.get("service")
    items = [
        {"service": service, **entry} if isinstance(entry, dict) and service is not None else entry
        for entry in entries
    ]
    events, positions, rejected = _validate(items, project=project, now=now, name=LOG_NAME)
    return _answer(request, project, events, positions, rejected, total=len(entries), now=now)


def _answer(request, project, events, positions, rejected, *, total, now) -> HttpResponse:
    result = pipeline.ingest(project=project, events=events, client_ip=client_ip(request), now=now)
    invalid = len(rejected)
    stored, results = _outcomes(events, positions, rejected, result)
    if events and result.count(pipeline.LIMITED) == len(events) and not invalid:
        return error(429, SLOW_DOWN, retry_after=result.retry_after)
    body = {
        "accepted": stored,
        "total": total,
        "retention_seconds": project.retention_days * 86400,
        "timestamp": _ms(now),
    }
    if total <= MAX_RESULTS:
        body["results"] = results
    if rejected:
        body["rejected"] = sorted(rejected, key=lambda r: r["index"])
    response = reply(200, body)
    if result.count(pipeline.LIMITED):
        response["Retry-After"] = str(result.retry_after)
    return response


def _outcomes(events, positions, rejected, result) -> tuple[int, list[dict]]:
    """Accepted count (new or already stored) and per-item results in request order; adds the
    events the limiter refused to `rejected`."""
    results: dict[int, dict] = {r["index"]: {**r, "success": False} for r in rejected}
    stored = 0
    for event, index, outcome in zip(events, positions, result.outcomes, strict=True):
        if outcome.status == pipeline.LIMITED:
            rejected.append({"index": index, "error": SLOW_DOWN})
            results[index] = {"index": index, "success": False, "error": SLOW_DOWN}
            continue
        stored += 1
        item = {"index": index, "success": True, "key": event.event_id}
        if outcome.status == pipeline.DUPLICATE:
            item["duplicate"] = True
        results[index] = item
    return stored, [results[i] for i in sorted(results)]


def _batch(request: HttpRequest, project: Project) -> HttpResponse:
    """POST /api/telemetry/batch {batch_id?, events}: stored once per batch_id, then completed."""
    refused = _check_ingest_key(request, project)
    if refused:
        return refused
    body = _read(request)
    if isinstance(body, HttpResponse):
        return body
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        return error(400, INVALID_BATCH)
    if len(items) > MAX_BATCH:
        return error(400, BATCH_TOO_LARGE)
    batch_id = body.get("batch_id")
    if batch_id is None:
        batch_id = secrets.token_hex(8)
    elif not isinstance(batch_id, str) or not BATCH_ID_RE.fullmatch(batch_id):
        return error(400, INVALID_BATCH_ID)
    now = timezone.now()
    batch = _reserve(project, batch_id, len(items), now)
    if batch is None:  # a retry of a batch we have: answer what it did, store nothing twice
        known = Batch.objects.get(project=project, batch_id=batch_id)
        return reply(200, _batch_summary(known, accepted=True))
    extra = {"batch_id": batch_id}
    events, positions, rejected = _validate(items, project=project, now=now, extra=extra)
    try:
        result = pipeline.ingest(
            project=project, events=events, client_ip=client_ip(request), now=now
        )
    except pipeline.ServiceUnavailable:
        batch.delete()  # nothing was stored: let the client retry under the same id
        raise
    stored, _results = _outcomes(events, positions, rejected, result)
    limited = result.count(pipeline.LIMITED)
    if events and limited == len(events) and len(rejected) == limited:
        batch.delete()
        return error(429, SLOW_DOWN, retry_after=result.retry_after)
    batch.accepted = stored
    batch.status = "completed"
    batch.save(update_fields=["accepted", "status"])
    body = _batch_summary(batch, accepted=True)
    if rejected:
        body["rejected"] = sorted(rejected, key=lambda r: r["index"])
    response = reply(200, body)
    if limited:
        response["Retry-After"] = str(result.retry_after)
    return response


BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _reserve(project: Project, batch_id: str, count: int, now: dt.datetime) -> Batch | None:
    """Claim batch_id as `processing`; None when it exists already (a retry, or a race lost)."""
    if Batch.objects.filter(project=project, batch_id=batch_id).exists():
        return None
    try:
        with transaction.atomic():
            return Batch.objects.create(
                project=project,
                batch_id=batch_id,
                event_count=count,
                accepted=0,
                status="processing",
                received_at=now,
            )
    except IntegrityError:
        return None


def _batch_summary(batch: Batch, *, accepted: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"batch_id": batch.batch_id}
    if accepted:
        body["accepted"] = batch.accepted
    else:
        body["event_count"] = batch.event_count
    body["timestamp"] = _ms(batch.received_at)
    body["status"] = batch.status
    return body


# --- reads ------------------------------------------------------------------------------------


def _batch_status(request: HttpRequest, project: Project, batch_id: str) -> HttpResponse:
    """GET /api/telemetry/batch/<id>: {batch_id, event_count, timestamp, status}."""
    refused = _check_ingest_key(request, project)
    if refused:
        return refused
    batch = None
    if BATCH_ID_RE.fullmatch(batch_id):
        batch = Batch.objects.filter(project=project, batch_id=batch_id).first()
    if batch is None:
        return error(404, BATCH_NOT_FOUND)
    return reply(200, _batch_summary(batch, accepted=False))


def _query(request: HttpRequest, project: Project) -> HttpResponse:
    """GET /api/telemetry/query: up to `limit` matching events, newest first (operator only)."""
    refused = _check_operator(request, project)
    if refused:
        return refused
    numbers: dict[str, int | None] = {}
    for name in ("start", "end", "limit"):
        raw = request.GET.get(name)
        try:
            numbers[name] = int(raw) if raw not in (None, "") else None
        except ValueError:
            return error(400, INVALID_QUERY.format(name=name))
    limit = numbers["limit"] if numbers["limit"] is not None else QUERY_DEFAULT
    limit = min(QUERY_MAX, max(1, limit))
    events = Event.objects.filter(project=project)
    try:
        if numbers["start"] is not None:
            events = events.filter(received_at__gte=_from_ms(numbers["start"]))
        if numbers["end"] is not None:
            events = events.filter(received_at__lte=_from_ms(numbers["end"]))
    except (OverflowError, OSError, ValueError):
        bad = "start" if numbers["start"] is not None and not _fits_ms(numbers["start"]) else "end"
        return error(400, INVALID_QUERY.format(name=bad))
    for name in QUERY_FILTERS:
        value = request.GET.get(name)
        if value is not None and not storable(value):
            return error(400, INVALID_FILTER.format(name=name))
        if value is not None:
            events = events.filter(**{f"properties__{name}": value})
    rows = [
        {**(e.properties or {}), "received_at": _ms(e.received_at), "key": e.event_id}
        for e in events.order_by("-received_at", "-id")[:limit]
    ]
    return reply(
        200,
        {
            "count": len(rows),
            "limit": limit,
            "retention_seconds": project.retention_days * 86400,
            "events": rows,
        },
    )


# --- mapping ----------------------------------------------------------------------------------


def _validate(
    items: list,
    *,
    project: Project,
    now: dt.datetime,
    name: str | None = None,
    extra: dict | None = None,
):
    events, positions, rejected = [], [], []
    for index, item in enumerate(items):
        try:
            events.append(_event(item, project=project, now=now, name=name, extra=extra))
            positions.append(index)
        except InvalidEvent as exc:
            rejected.append({"index": index, "error": str(exc)})
    return events, positions, rejected


def _event(
    item: Any,
    *,
    project: Project,
    now: dt.datetime,
    name: str | None = None,
    extra: dict | None = None,
) -> IncomingEvent:
    """One Pryx event (or log entry, when `name` is given) as an IncomingEvent; `extra` is what
    the envelope adds to every item (the batch id), after the project's schema has had its say."""
    if not isinstance(item, dict):
        raise InvalidEvent("event", "must be a JSON object")
    for key in SCALAR_KEYS:
        value = item.get(key)
        if isinstance(value, dict | list):
            raise InvalidEvent(key, "must be a string, number, boolean or null")
    if not storable(item):
        raise InvalidEvent("event", "text with NUL or a lone surrogate cannot be stored")
    correlation = item.get("correlation_id")
    if correlation is not None and not isinstance(correlation, str):
        raise InvalidEvent("correlation_id", "must be a string")
    properties = {**validate_properties(dict(item), project=project), **(extra or {})}
    private = project.redact_pii
    timestamp = _timestamp(item.get("timestamp"), project=project, now=now)
    return IncomingEvent(
        install_id=_install_id(item.get("device_id"), private=private),
        name=name or _name(item.get("category"), private=private),
        timestamp=timestamp,
        event_id=_event_id(correlation, private=private),
        # A retry of an event without a usable time gets another arrival time: match its
        # correlation id on every day instead.
        dedupe_any_time=bool(correlation) and timestamp == now,
        session_id=_short(item.get("session_id"), private=private),
        app_version=_short(item.get("version"), private=private),
        os="",
        properties=properties,  # the pipeline redacts these when the project asks for it
    )


def _install_id(value: Any, *, private: bool) -> str:
    """device_id when it fits the install-id rule (`pryx-<unixnano>` does), else a stable hash."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        return ""
    if INSTALL_ID_RE.fullmatch(value) and not (private and redact(value) != value):
        return value
    return hashlib.sha256(f"device:{value}".encode()).hexdigest()[:32]


def _event_id(correlation: str | None, *, private: bool) -> str:
    """correlation_id is the dedupe key; without one, a fresh id (the result's `key`)."""
    if not correlation:
        return "px_" + secrets.token_hex(16)
    if EVENT_ID_RE.fullmatch(correlation) and not (private and redact(correlation) != correlation):
        return correlation
    return "cid_" + hashlib.sha256(correlation.encode()).hexdigest()[:40]


_NOT_NAME = re.compile(r"[^a-z0-9_.:-]+")


def _name(category: Any, *, private: bool) -> str:
    if not isinstance(category, str) or not category:
        return DEFAULT_NAME
    if private:
        category = str(redact(category))
    name = _NOT_NAME.sub("_", category.strip().lower())[:64]
    return name if NAME_RE.fullmatch(name) else DEFAULT_NAME


def _short(value: Any, *, private: bool) -> str:
    """session_id/version for their columns (≤ 64 characters); longer ones live in properties."""
    if not isinstance(value, str) or len(value) > 64:
        return ""
    return str(redact(value)) if private else value


def _timestamp(value: Any, *, project: Project, now: dt.datetime) -> dt.datetime:
    """The client's time (epoch ms, or ISO 8601) when readable and in the window, else arrival."""
    parsed = None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if abs(value) > 1e11 else value
            parsed = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
        elif isinstance(value, str) and value:
            parsed = dt.datetime.fromisoformat(value.strip())
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            parsed = parsed.astimezone(dt.UTC)
    except (OverflowError, OSError, ValueError):
        parsed = None
    if parsed is None:
        return now
    try:
        check_timestamp_window(parsed, now=now, retention_days=project.retention_days)
    except InvalidEvent:
        return now
    return parsed


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _fits_ms(ms: int) -> bool:
    try:
        _from_ms(ms)
    except (OverflowError, OSError, ValueError):
        return False
    return True
