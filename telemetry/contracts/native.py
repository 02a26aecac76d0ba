"""The native contract: `POST /api/v1/events`, one event or {"events": [...]}, JSON errors.

Parses and authenticates the request, validates each event (schema.event_from_native), runs the
pipeline and formats 202 {"accepted", "duplicates", "rejected"}; every error is {"error","detail"}.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from telemetry.http import (
    BodyTooLarge,
    BodyUnreadable,
    media_type,
    parse_json,
    plain_text,
    read_body,
)
from telemetry.ingest import auth, pipeline
from telemetry.ingest.privacy import client_ip
from telemetry.ingest.schema import InvalidEvent, event_from_native
from telemetry.models import Project

MAX_BODY = 1024 * 1024
MAX_BATCH = 1000


def error(status: int, code: str, detail: str, **extra) -> JsonResponse:
    """The one shape of every native error: {"error": code, "detail": what to fix}."""
    response = JsonResponse({"error": code, "detail": detail, **extra}, status=status)
    if "retry_after" in extra:
        response["Retry-After"] = str(extra["retry_after"])
    return response


def authenticate(request: HttpRequest, project: Project | None) -> Project | JsonResponse:
    key = auth.request_key(request)
    if key is None:
        return error(
            401,
            "missing_key",
            "send the ingest key as 'Authorization: Bearer <key>' or 'X-Telemetry-Key: <key>'",
        )
    owner = auth.project_for_key(key)
    if owner is None or (project is not None and owner.pk != project.pk):
        return error(
            403, "invalid_key", "the ingest key is unknown, revoked or for another project"
        )
    return owner


def handle_events(request: HttpRequest, project: Project | None = None) -> JsonResponse:
    """Ingest the body of a POST; `project` is set when the URL named it (`/p/<slug>/…`)."""
    owner = authenticate(request, project)
    if isinstance(owner, JsonResponse):
        return owner
    if media_type(request) != "application/json":
        return error(415, "unsupported_media_type", "send Content-Type: application/json")
    try:
        body = read_body(request, MAX_BODY)
        payload = parse_json(body)
    except BodyTooLarge:
        return error(413, "payload_too_large", f"the body is over {MAX_BODY} bytes")
    except BodyUnreadable:
        return error(400, "unreadable_body", "the body could not be read")
    except ValueError as exc:
        return error(400, "invalid_json", f"the body is not valid JSON: {exc}")

    now = timezone.now()
    plain = plain_text(body)
    if isinstance(payload, dict) and "events" in payload:
        return _batch(request, owner, payload, now, plain)
    try:
        event = event_from_native(payload, project=owner, now=now, plain_text=plain)
    except InvalidEvent as exc:
        return error(400, "invalid_event", str(exc), field=exc.field)
    result = _run(request, owner, [event], now)
    if isinstance(result, JsonResponse):
        return result
    (outcome,) = result.outcomes
    if outcome.status == pipeline.LIMITED:
        return error(429, "rate_limited", _limited_detail(outcome), retry_after=outcome.retry_after)
    return _accepted(result, [])


def _batch(request: HttpRequest, project: Project, payload: dict, now, plain: bool) -> JsonResponse:
    items = payload["events"]
    if set(payload) != {"events"}:
        return error(400, "invalid_batch", 'a batch is {"events": [...]} and nothing else')
    if not isinstance(items, list) or not items:
        return error(400, "invalid_batch", "'events' must be a non-empty array")
    if len(items) > MAX_BATCH:
        return error(413, "batch_too_large", f"at most {MAX_BATCH} events per batch")
    valid, positions, rejected = [], [], []
    for index, item in enumerate(items):
        try:
            valid.append(event_from_native(item, project=project, now=now, plain_text=plain))
            positions.append(index)
        except InvalidEvent as exc:
            rejected.append({"index": index, "error": str(exc)})
    result = _run(request, project, valid, now)
    if isinstance(result, JsonResponse):
        return result
    for index, outcome in zip(positions, result.outcomes, strict=True):
        if outcome.status == pipeline.LIMITED:
            rejected.append({"index": index, "error": _limited_detail(outcome)})
    rejected.sort(key=lambda r: r["index"])
    limited = sum(1 for o in result.outcomes if o.status == pipeline.LIMITED)
    if limited and limited == len(items):
        return error(
            429,
            "rate_limited",
            "every event in the batch was over the rate limit",
            retry_after=result.retry_after,
        )
    response = _accepted(result, rejected)
    if limited:
        response["Retry-After"] = str(result.retry_after)
    return response


def _run(request: HttpRequest, project: Project, events, now):
    try:
        return pipeline.ingest(
            project=project, events=events, client_ip=client_ip(request), now=now
        )
    except pipeline.ServiceUnavailable as exc:
        return error(
            503,
            "service_unavailable",
            f"{exc.service} unavailable, retry later",
            retry_after=exc.retry_after,
        )


def _limited_detail(outcome: pipeline.Outcome) -> str:
    who = {"install": "install id", "ip": "client IP", "key": "ingest key"}[outcome.limited_by]
    return f"rate limit exceeded for this {who}; retry after {outcome.retry_after} s"


def serve(request: HttpRequest, project: Project, path: str) -> HttpResponse:
    """`/p/<slug>/api/v1/events`, with the project fixed by the URL. (telemetry.api.views routes
    that path through its DRF view first, so both URLs answer alike; contracts never import the
    api layer.)"""
    if path == "api/v1/events":
        return handle_events(request, project)
    return error(404, "not_found", f"no route /{path}")


def _accepted(result: pipeline.IngestResult, rejected: list) -> JsonResponse:
    return JsonResponse(
        {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": rejected},
        status=202,
    )
