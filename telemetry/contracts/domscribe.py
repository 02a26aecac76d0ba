"""The Domscribe contract: `POST …/v1/session`, `GET …/v1/wau/<YYYY-Www>`, `GET …/healthz`.

Translates the relay worker's wire format (CONTRACTS B1, with A3's token and rate limits) onto the
ingest pipeline: one event per (session_id, ISO week), text bodies and security headers always.
"""

import datetime as dt
import hashlib
import json
import logging
import re
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from telemetry.http import BodyTooLarge, BodyUnreadable, parse_json, read_body
from telemetry.ingest import auth, pipeline, rollups
from telemetry.ingest.privacy import client_ip
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import DailyActivity, Project

log = logging.getLogger(__name__)

# The worker's text bodies, in the order its routes check them (CONTRACTS B1).
METHOD_NOT_ALLOWED = "method not allowed"
UNSUPPORTED_MEDIA_TYPE = "unsupported media type"
PAYLOAD_TOO_LARGE = "payload too large"
COULD_NOT_READ_BODY = "could not read body"
INVALID_JSON = "invalid json"
INVALID_PAYLOAD = "invalid payload"
RATE_LIMITED = "rate limited"  # ours (A3): the worker had no limits
FORBIDDEN = "forbidden"
INVALID_WEEK = "invalid week"
NOT_FOUND = "not found"
OK = "ok"
SERVICE_UNAVAILABLE = "service unavailable"  # ours (A3): never a 500

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TEXT = "text/plain; charset=utf-8"
MAX_BODY = 1024

_SEMVER = r"[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?"
SEMVER_RE = re.compile(_SEMVER)
NODE_VERSION_RE = re.compile(r"v?" + _SEMVER)
SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
WEEK_RE = re.compile(r"[0-9]{4}-W[0-9]{2}")
PLATFORMS = frozenset({"darwin", "linux", "win32", "freebsd", "openbsd"})
FRAMEWORKS = frozenset({"react", "vue", "next", "nuxt", "svelte", "astro", "solid", "unknown"})
FIELDS = frozenset(
    {
        "protocol_version",
        "daemon_version",
        "session_id",
        "platform",
        "node_version",
        "primary_framework",
    }
)
MAX_VERSION = 64  # daemon_version becomes the stored app_version, a 64-character column


def respond(status: int, body: str = "", **headers: str) -> HttpResponse:
    """The one response helper: a text body with the worker's security headers, always."""
    response = HttpResponse(body, status=status, content_type=TEXT)
    for name, value in {**SECURITY_HEADERS, **headers}.items():
        response[name.replace("_", "-")] = value
    return response


def _unavailable() -> HttpResponse:
    return respond(
        503, SERVICE_UNAVAILABLE, Retry_After=str(settings.TELEMETRY_RETRY_AFTER_SECONDS)
    )


def iso_week(moment: dt.datetime | dt.date) -> str:
    """`YYYY-Www` of the ISO week holding `moment` (week 1 holds the year's first Thursday)."""
    if isinstance(moment, dt.datetime):
        moment = moment.astimezone(dt.UTC).date()
    year, week, _ = moment.isocalendar()
    return f"{year:04d}-W{week:02d}"


def week_days(week: str) -> tuple[dt.date, dt.date] | None:
    """Monday and Sunday of `YYYY-Www`, or None for a week no calendar has (W00, W54, …)."""
    try:
        monday = dt.date.fromisocalendar(int(week[:4]), int(week[6:]), 1)
    except ValueError:
        return None
    return monday, monday + dt.timedelta(days=6)


def session_event_id(week: str, session_id: str) -> str:
    """The dedupe key of one session in one week, at most 64 characters.

    Long session ids are hashed; `~` never occurs in a session id, so the forms cannot collide.
    """
    plain = f"dom-{week}-{session_id}"
    if len(plain) <= 64:
        return plain
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    return f"dom-{week}~{digest}"[:64]


def weekly_active_sessions(*, project: Project, week: str) -> int:
    """Distinct session ids with an accepted event in `week` (from the daily activity rollup)."""
    days = week_days(week)
    if days is None:
        return 0
    rollups.fold_rollups()
    return (
        DailyActivity.objects.filter(project=project, day__range=days)
        .values("install_id")
        .distinct()
        .count()
    )


def _valid(payload: Any) -> bool:
    """The worker's strict schema: exactly these six string fields, each to its rule."""
    if not isinstance(payload, dict) or set(payload) != FIELDS:
        return False
    if not all(isinstance(v, str) for v in payload.values()):
        return False
    return bool(
        SEMVER_RE.fullmatch(payload["protocol_version"])
        and SEMVER_RE.fullmatch(payload["daemon_version"])
        and len(payload["daemon_version"]) <= MAX_VERSION
        and SESSION_ID_RE.fullmatch(payload["session_id"])
        and payload["platform"] in PLATFORMS
        and NODE_VERSION_RE.fullmatch(payload["node_version"])
        and payload["primary_framework"] in FRAMEWORKS
    )


def event_from_payload(payload: Any, *, week: str) -> IncomingEvent | None:
    """The one event of `payload`'s session in ISO `week`, or None when the worker's schema
    refuses it. The KV importer calls it too, with the week of the record's key."""
    days = week_days(week) if WEEK_RE.fullmatch(week) else None
    if days is None or not _valid(payload):
        return None
    return IncomingEvent(
        install_id=payload["session_id"],
        name="session",
        # The dedupe key is (event_id, timestamp): a session's one event per week needs one
        # timestamp for the whole week, so a repeat on Friday meets Monday's row.
        timestamp=dt.datetime.combine(days[0], dt.time.min, tzinfo=dt.UTC),
        event_id=session_event_id(week, payload["session_id"]),
        app_version=payload["daemon_version"],
        os=payload["platform"],
        properties={
            k: payload[k] for k in ("protocol_version", "node_version", "primary_framework")
        },
    )


def _now() -> dt.datetime:
    return timezone.now()


def post_session(request: HttpRequest, project: Project) -> HttpResponse:
    """`POST …/v1/session`: 204 for a new or repeated session, whatever the store did."""
    content_type = request.META.get("CONTENT_TYPE", "")
    if not content_type.lower().startswith("application/json"):
        return respond(415, UNSUPPORTED_MEDIA_TYPE)
    try:
        body = read_body(request, MAX_BODY)
    except BodyTooLarge:
        return respond(413, PAYLOAD_TOO_LARGE)
    except BodyUnreadable:
        return respond(400, COULD_NOT_READ_BODY)
    try:
        payload = parse_json(body)
    except (ValueError, RecursionError):
        return respond(400, INVALID_JSON)
    now = _now()
    event = event_from_payload(payload, week=iso_week(now))
    if event is None:
        return respond(400, INVALID_PAYLOAD)
    try:
        result = pipeline.ingest(
            project=project, events=[event], client_ip=client_ip(request), now=now
        )
    except pipeline.ServiceUnavailable:
        return _unavailable()
    (outcome,) = result.outcomes
    if outcome.status == pipeline.LIMITED:
        return respond(429, RATE_LIMITED, Retry_After=str(outcome.retry_after))
    return respond(204)


def _operator_token(request: HttpRequest) -> list[str]:
    tokens = request.GET.getlist("token")[:1]  # the first, as URLSearchParams.get reads it
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        tokens.append(header[7:].strip())
    return tokens


def get_wau(request: HttpRequest, project: Project, week: str) -> HttpResponse:
    """`GET …/v1/wau/<week>`: operators only; the token is checked before the week's format."""
    if not project.operator_token_hash:
        return respond(404, NOT_FOUND)
    # Every candidate is compared, so timing does not reveal which one was present.
    matches = [auth.operator_token_matches(project, t) for t in _operator_token(request)]
    if not any(matches):
        return respond(403, FORBIDDEN)
    if not WEEK_RE.fullmatch(week):
        return respond(400, INVALID_WEEK)
    count = weekly_active_sessions(project=project, week=week)
    response = respond(
        200, json.dumps({"week": week, "weekly_active_sessions": count}, separators=(",", ":"))
    )
    response["Content-Type"] = "application/json"
    return response


def route(request: HttpRequest, project: Project, path: str) -> HttpResponse:
    if path == "v1/session":
        if request.method != "POST":
            return respond(405, METHOD_NOT_ALLOWED, Allow="POST")
        return post_session(request, project)
    if request.method == "GET" and path.startswith("v1/wau/"):
        return get_wau(request, project, path.removeprefix("v1/wau/"))
    if request.method == "GET" and path == "healthz":
        return respond(200, OK)
    return respond(404, NOT_FOUND)


def serve(request: HttpRequest, project: Project, path: str) -> HttpResponse:
    """Answer every request in the worker's format, a failing database included."""
    try:
        return route(request, project, path)
    except DatabaseError as exc:
        log.warning("domscribe: database unavailable (%s)", type(exc).__name__)
        return _unavailable()
