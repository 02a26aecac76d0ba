"""The Axiom-style contract: `POST /v1/datasets/<dataset>/ingest` with a Bearer ingest key, a JSON
array, one object or NDJSON, answered with Axiom's IngestStatus, so a sender changes only its URL.

Mapping: `_time` → timestamp, `customer_id` → install, `event_type` (else the dataset) → name; the
rest of each event plus `dataset` is stored as properties. A gateway is one IP: limits go per key.
"""

import datetime as dt
import hashlib
import logging
import re
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from telemetry.http import (
    BodyTooLarge,
    BodyUnreadable,
    compact_json,
    media_type,
    parse_json,
    read_body,
)
from telemetry.ingest import auth, pipeline
from telemetry.ingest.privacy import client_ip, redact
from telemetry.ingest.schema import (
    INSTALL_ID_RE,
    NAME_RE,
    IncomingEvent,
    InvalidEvent,
    check_timestamp_window,
    storable,
    validate_properties,
)
from telemetry.models import Project

log = logging.getLogger(__name__)

# Exact messages, in the order they are checked; each is {"message": <message>, "code": status}.
NOT_FOUND = "not found"  # 404: any other path
METHOD_NOT_ALLOWED = "method not allowed"  # 405 + Allow: POST
INVALID_DATASET = "invalid dataset name: use 1-128 characters of A-Z a-z 0-9 _ . -"  # 400
UNAUTHORIZED = "unauthorized: send Authorization: Bearer <ingest key>"  # 401
FORBIDDEN = "forbidden: the key is unknown, revoked or for another project"  # 403
UNSUPPORTED_MEDIA_TYPE = "unsupported content type: use application/json or application/x-ndjson"
PAYLOAD_TOO_LARGE = "request body too large: at most 1048576 bytes"  # 413
INVALID_JSON = "invalid JSON body"  # 400
INVALID_NDJSON = "invalid JSON on line {line}"  # 400
NOT_EVENTS = "expected a JSON object or an array of objects"  # 400
RATE_LIMITED = "rate limit exceeded"  # 429 + Retry-After (also a per-event failure)
UNAVAILABLE = "service unavailable"  # 503 + Retry-After
# Per-event failures: {"timestamp": <the event's _time or now>, "error": "event <i>: <reason>"}.
RESERVED_DATASET = "dataset: reserved, the dataset is named by the URL"
BAD_TIME = "_time: RFC 3339 string or epoch number (s, ms, µs or ns)"

MAX_BODY = 1024 * 1024
JSON_TYPES = {"application/json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/nd-json"}
PATH_RE = re.compile(r"^v1/datasets/([^/]+)/ingest$")
DATASET_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
DEFAULT_NAME = "axiom"


def reply(status: int, body: dict) -> HttpResponse:
    return compact_json(status, body)


def error(status: int, message: str, *, retry_after: int | None = None) -> HttpResponse:
    """The one error shape of this contract: {"message": <message>, "code": <status>}."""
    response = reply(status, {"message": message, "code": status})
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def serve(request: HttpRequest, project: Project, path: str) -> HttpResponse:
    match = PATH_RE.fullmatch(path)
    if match is None:
        return error(404, NOT_FOUND)
    if request.method != "POST":
        response = error(405, METHOD_NOT_ALLOWED)
        response["Allow"] = "POST"
        return response
    dataset = match.group(1)
    if not DATASET_RE.fullmatch(dataset):
        return error(400, INVALID_DATASET)
    try:
        return _ingest(request, project, dataset)
    except pipeline.ServiceUnavailable as exc:
        return error(503, UNAVAILABLE, retry_after=exc.retry_after)
    except DatabaseError as exc:
        log.warning("axiom: database unavailable (%s)", type(exc).__name__)
        return error(503, UNAVAILABLE, retry_after=settings.TELEMETRY_RETRY_AFTER_SECONDS)


def _ingest(request: HttpRequest, project: Project, dataset: str) -> HttpResponse:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return error(401, UNAUTHORIZED)
    owner = auth.project_for_key(key)
    if owner is None or owner.pk != project.pk:
        return error(403, FORBIDDEN)
    kind = media_type(request)
    if kind not in JSON_TYPES and kind not in NDJSON_TYPES:
        return error(415, UNSUPPORTED_MEDIA_TYPE)
    try:
        body = read_body(request, MAX_BODY)
    except BodyTooLarge:
        return error(413, PAYLOAD_TOO_LARGE)
    except BodyUnreadable:
        return error(400, INVALID_JSON)
    items = _parse(body, ndjson=kind in NDJSON_TYPES)
    if isinstance(items, HttpResponse):
        return items

    now = timezone.now()
    events, positions, failures = [], [], []
    for index, item in enumerate(items):
        try:
            events.append(event_from_item(item, project=project, dataset=dataset, now=now))
            positions.append(index)
        except InvalidEvent as exc:
            failures.append((index, _failure(item, f"event {index}: {exc}", now)))
    invalid = len(failures)
    # A gateway posts for all its users from one address: its key is the second bucket.
    result = pipeline.ingest(
        project=project,
        events=events,
        client_ip=client_ip(request),
        now=now,
        limit_key=auth.hash_secret(key)[:32],
    )
    for index, outcome in zip(positions, result.outcomes, strict=True):
        if outcome.status == pipeline.LIMITED:
            failures.append((index, _failure(items[index], f"event {index}: {RATE_LIMITED}", now)))
    limited = result.count(pipeline.LIMITED)
    if events and limited == len(events) and not invalid:
        return error(429, RATE_LIMITED, retry_after=result.retry_after)
    ingested = len(events) - limited
    response = reply(
        200,
        {
            "ingested": ingested,
            "failed": len(failures),
            "failures": [f for _i, f in sorted(failures, key=lambda pair: pair[0])],
            "processedBytes": len(body),
            "blocksCreated": 0,
            "walLength": ingested,
        },
    )
    if limited:
        response["Retry-After"] = str(result.retry_after)
    return response


def _parse(body: bytes, *, ndjson: bool) -> list | HttpResponse:
    """The events of a JSON array, a single JSON object, or NDJSON (one value per line)."""
    if not ndjson:
        try:
            payload = parse_json(body)
        except (ValueError, RecursionError):
            return error(400, INVALID_JSON)
        if isinstance(payload, dict):
            return [payload]
        if isinstance(payload, list):
            return payload
        return error(400, NOT_EVENTS)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, INVALID_JSON)
    items = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append(parse_json(line.encode()))
        except (ValueError, RecursionError):
            return error(400, INVALID_NDJSON.format(line=number))
    return items


def event_from_item(
    item: Any, *, project: Project, dataset: str, now: dt.datetime, history: bool = False
) -> IncomingEvent:
    """The event one Axiom item becomes; raises InvalidEvent. `history` (the importer) lifts
    the retention bound: the importer keeps older items as anonymous aggregates itself."""
    if not isinstance(item, dict):
        raise InvalidEvent("event", "must be a JSON object")
    if "dataset" in item:
        raise InvalidEvent("dataset", "reserved, the dataset is named by the URL")
    if not storable(item):
        raise InvalidEvent("event", "text with NUL or a lone surrogate cannot be stored")
    timestamp = _time(item.get("_time"), now=now)
    check_timestamp_window(
        timestamp,
        now=now,
        retention_days=None if history else project.retention_days,
        field_name="_time",
    )
    fields = {k: v for k, v in item.items() if k != "_time"}
    properties = {**validate_properties(fields, project=project), "dataset": dataset}
    return IncomingEvent(
        install_id=_install_id(item.get("customer_id"), private=project.redact_pii),
        name=_name(item.get("event_type"), dataset),
        timestamp=timestamp,
        properties=properties,
    )


def _time(value: Any, *, now: dt.datetime) -> dt.datetime:
    """Axiom's `_time`: absent is now; an RFC 3339 string, or epoch s/ms/µs/ns by magnitude."""
    if value is None:
        return now
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            size = abs(value)
            divisor = 1e9 if size > 1e17 else 1e6 if size > 1e14 else 1e3 if size > 1e11 else 1
            return dt.datetime.fromtimestamp(value / divisor, tz=dt.UTC)
        if isinstance(value, str) and value.strip():
            parsed = dt.datetime.fromisoformat(value.strip())
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.astimezone(dt.UTC)
    except (OverflowError, OSError, ValueError):
        pass
    raise InvalidEvent("_time", "RFC 3339 string or epoch number (s, ms, µs or ns)")


def _failure(item: Any, message: str, now: dt.datetime) -> dict[str, str]:
    raw = item.get("_time") if isinstance(item, dict) else None
    # Echo the client's _time only when it can be written back as UTF-8 (no lone surrogate).
    echo = isinstance(raw, str) and raw and storable(raw)
    stamp = raw if echo else now.isoformat().replace("+00:00", "Z")
    return {"timestamp": stamp, "error": message}


def _install_id(value: Any, *, private: bool) -> str:
    """customer_id when it fits the install-id rule, else a stable hash; none when absent."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        return ""
    if INSTALL_ID_RE.fullmatch(value) and not (private and redact(value) != value):
        return value
    return hashlib.sha256(f"customer:{value}".encode()).hexdigest()[:32]


_NOT_NAME = re.compile(r"[^a-z0-9_.:-]+")


def _name(event_type: Any, dataset: str) -> str:
    for candidate in (event_type, dataset):
        if isinstance(candidate, str) and candidate:
            name = _NOT_NAME.sub("_", candidate.strip().lower())[:64]
            if NAME_RE.fullmatch(name):
                return name
    return DEFAULT_NAME
