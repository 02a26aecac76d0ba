"""The VoiceMode contract: `POST …/telemetry` from the VoiceMode Python client, CORS everywhere.

Translates the worker's wire format (CONTRACTS B2, with the A3 differences) onto the ingest
pipeline: one event named "telemetry" per request, answered with the worker's exact JSON bodies.
"""

import datetime as dt
import logging
import re
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from telemetry.http import BodyTooLarge, BodyUnreadable, compact_json, parse_json, read_body
from telemetry.ingest import pipeline
from telemetry.ingest.privacy import client_ip
from telemetry.ingest.schema import IncomingEvent, storable
from telemetry.models import Project

log = logging.getLogger(__name__)

# The worker's 13 validation messages, in the order it checks them (CONTRACTS B2 step 2).
MISSING_PAYLOAD = "Missing payload"
BAD_EVENT_ID = "Invalid or missing event_id"
BAD_TELEMETRY_ID = "Invalid or missing telemetry_id"
TELEMETRY_ID_NOT_UUID = "Invalid telemetry_id format (must be UUID)"
BAD_TIMESTAMP = "Invalid or missing timestamp"
TIMESTAMP_NOT_ISO = "Invalid timestamp format (must be ISO 8601)"
TIMESTAMP_FUTURE = "Timestamp too far in the future"
TIMESTAMP_OLD = "Timestamp too old (max 90 days)"
BAD_ENVIRONMENT = "Invalid or missing environment object"
BAD_OS = "Invalid or missing environment.os"
BAD_VERSION = "Invalid or missing environment.version"
BAD_USAGE = "Invalid or missing usage object"
BAD_TOTAL_SESSIONS = "Invalid or missing usage.total_sessions"
# Responses after validation, and our additions (A2/A3): JSON errors instead of the worker's 500.
ALREADY_RECORDED = "Event already recorded"
LIMITED_ID = "Rate limit exceeded for telemetry ID"
LIMITED_IP = "Rate limit exceeded for IP address"
INVALID_JSON = "Invalid JSON"
TOO_LARGE = "Payload too large"
UNAVAILABLE = "Service unavailable"
NOT_FOUND = "Not Found"

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}
# A real report is one or two kilobytes; the worker had no cap, we keep a generous one.
MAX_BODY = 64 * 1024
# Nesting the client never sends; deeper bodies are refused before anything walks them.
MAX_ID = 64  # event_id, environment.os and environment.version share the stored columns' width
FUTURE_SLACK = dt.timedelta(days=1)
MAX_AGE = dt.timedelta(days=90)
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The pipeline's columns, not properties: everything else the client sent is kept as sent.
MAPPED = ("event_id", "telemetry_id", "timestamp")


class Invalid(ValueError):
    """A payload the worker would refuse with 400 {"error": message}."""


def respond(status: int, body: dict[str, Any], retry_after: int | None = None) -> HttpResponse:
    """The one response helper: compact JSON as the worker's JSON.stringify wrote it, plus CORS."""
    response = compact_json(status, body, retry_after=retry_after)
    for name, value in CORS.items():
        response[name] = value
    return response


def _not_found() -> HttpResponse:
    response = HttpResponse(NOT_FOUND, status=404, content_type="text/plain;charset=UTF-8")
    for name, value in CORS.items():
        response[name] = value
    return response


def _preflight() -> HttpResponse:
    response = HttpResponse(status=204)
    del response["Content-Type"]
    for name, value in CORS.items():
        response[name] = value
    return response


def _is_telemetry_url(request: HttpRequest, path: str) -> bool:
    # The worker matched the full URL string, so any query string (even `?x=1`) misses.
    return (path == "telemetry" or path.endswith("/telemetry")) and not request.META.get(
        "QUERY_STRING"
    )


def _js_falsy(value: Any) -> bool:
    if value is None or value is False or value == "":
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def _timestamp(value: Any, now: dt.datetime, max_age: dt.timedelta | None) -> dt.datetime:
    if not isinstance(value, str) or not value:
        raise Invalid(BAD_TIMESTAMP)
    try:
        parsed = dt.datetime.fromisoformat(value)
        # The worker ran in UTC, where JS reads an offset-less date-time as UTC too.
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        parsed = parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise Invalid(TIMESTAMP_NOT_ISO) from None
    if parsed > now + FUTURE_SLACK:
        raise Invalid(TIMESTAMP_FUTURE)
    if max_age is not None and parsed < now - max_age:
        raise Invalid(TIMESTAMP_OLD)
    return parsed


def _short_string(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID


def event_from_payload(
    payload: Any, *, now: dt.datetime, max_age: dt.timedelta | None = MAX_AGE
) -> IncomingEvent:
    """Check `payload` in the worker's order; raise Invalid(message) at the first failure.

    `max_age` is the worker's 90 days, or the project's retention when shorter: an event the
    purge would take the same day is refused, with the worker's message. The importer passes
    None (no lower bound): it splits old rows into anonymous aggregates itself.
    """
    if _js_falsy(payload):
        raise Invalid(MISSING_PAYLOAD)
    # A JSON array, string or number is an object without fields to the worker.
    fields = payload if isinstance(payload, dict) else {}
    event_id = fields.get("event_id")
    if not _short_string(event_id):
        raise Invalid(BAD_EVENT_ID)
    telemetry_id = fields.get("telemetry_id")
    if not isinstance(telemetry_id, str) or not telemetry_id:
        raise Invalid(BAD_TELEMETRY_ID)
    if not UUID_RE.fullmatch(telemetry_id):
        raise Invalid(TELEMETRY_ID_NOT_UUID)
    timestamp = _timestamp(fields.get("timestamp"), now, max_age)
    environment = fields.get("environment")
    # typeof [] is "object" in JS: an array passes this check and fails on environment.os.
    if not isinstance(environment, dict | list):
        raise Invalid(BAD_ENVIRONMENT)
    environment = environment if isinstance(environment, dict) else {}
    if not _short_string(environment.get("os")):
        raise Invalid(BAD_OS)
    if not _short_string(environment.get("version")):
        raise Invalid(BAD_VERSION)
    usage = fields.get("usage")
    if not isinstance(usage, dict | list):
        raise Invalid(BAD_USAGE)
    total = usage.get("total_sessions") if isinstance(usage, dict) else None
    # A fresh install has no conversation logs and sends `usage: {}`; anything else is a report
    # and must carry its session count as a JSON number, as the worker required.
    if usage != {} and (not isinstance(total, int | float) or isinstance(total, bool)):
        raise Invalid(BAD_TOTAL_SESSIONS)
    return IncomingEvent(
        install_id=telemetry_id,
        name="telemetry",
        timestamp=timestamp,
        event_id=event_id,
        app_version=environment["version"],
        os=environment["os"],
        properties={k: v for k, v in fields.items() if k not in MAPPED},
    )


def handle_telemetry(request: HttpRequest, project: Project) -> HttpResponse:
    """A POST to …/telemetry: read, validate, ingest, and answer as the worker did."""
    try:
        body = read_body(request, MAX_BODY)
    except BodyTooLarge:
        return respond(413, {"error": TOO_LARGE})
    except BodyUnreadable:
        return respond(400, {"error": INVALID_JSON})
    try:
        payload = parse_json(body)
    except (ValueError, RecursionError):
        return respond(400, {"error": INVALID_JSON})
    if not storable(payload):
        return respond(400, {"error": INVALID_JSON})
    now = timezone.now()
    try:
        retention = dt.timedelta(days=project.retention_days)
        event = event_from_payload(payload, now=now, max_age=min(MAX_AGE, retention))
    except Invalid as exc:
        return respond(400, {"error": str(exc)})
    try:
        result = pipeline.ingest(
            project=project, events=[event], client_ip=client_ip(request), now=now
        )
    except pipeline.ServiceUnavailable as exc:
        return respond(503, {"error": UNAVAILABLE, "retry_after": exc.retry_after}, exc.retry_after)
    (outcome,) = result.outcomes
    if outcome.status == pipeline.DUPLICATE:
        return respond(200, {"status": "ok", "message": ALREADY_RECORDED})
    if outcome.status == pipeline.LIMITED:
        message = LIMITED_ID if outcome.limited_by == "install" else LIMITED_IP
        return respond(
            429, {"error": message, "retry_after": outcome.retry_after}, outcome.retry_after
        )
    return respond(200, {"status": "ok", "event_id": event.event_id})


def serve(request: HttpRequest, project: Project, path: str) -> HttpResponse:
    """Route like the worker: OPTIONS anywhere, POST to a URL ending in /telemetry, else 404."""
    if request.method == "OPTIONS":
        return _preflight()
    if request.method != "POST" or not _is_telemetry_url(request, path):
        return _not_found()
    try:
        return handle_telemetry(request, project)
    except DatabaseError as exc:
        # The pipeline maps its own failures; this covers the project or salt lookups around it.
        log.warning("voicemode: database unavailable (%s)", type(exc).__name__)
        retry = settings.TELEMETRY_RETRY_AFTER_SECONDS
        return respond(503, {"error": UNAVAILABLE, "retry_after": retry}, retry)
