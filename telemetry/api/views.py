"""DRF views of the native API; each parses, calls one function, and answers."""

from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.views import APIView

from telemetry.contracts import front_door as door_for
from telemetry.contracts import native
from telemetry.ingest.auth import project_by_slug
from telemetry.ingest.schema import NativeEventSerializer
from telemetry.models import Contract, Project

NATIVE_EVENTS_PATH = "api/v1/events"

_error = inline_serializer(
    "Error", {"error": serializers.CharField(), "detail": serializers.CharField()}
)
_accepted = inline_serializer(
    "IngestResult",
    {
        "accepted": serializers.IntegerField(),
        "duplicates": serializers.IntegerField(),
        "rejected": serializers.ListField(
            child=inline_serializer(
                "Rejected", {"index": serializers.IntegerField(), "error": serializers.CharField()}
            )
        ),
    },
)


class EventsView(APIView):
    """Ingest one event or a batch of up to 1,000 for the project the key belongs to."""

    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(
        operation_id="ingest_events",
        request=NativeEventSerializer,
        responses={
            202: _accepted,
            400: OpenApiResponse(_error, description="invalid JSON, batch or event"),
            401: OpenApiResponse(_error, description="no ingest key"),
            403: OpenApiResponse(_error, description="unknown or revoked key"),
            413: OpenApiResponse(_error, description="over 1 MB or 1,000 events"),
            415: OpenApiResponse(_error, description="not application/json"),
            429: OpenApiResponse(_error, description="rate limited; see Retry-After"),
            503: OpenApiResponse(_error, description="database or cache down; see Retry-After"),
        },
        examples=[
            OpenApiExample(
                "one event",
                value={
                    "install_id": "inst_8f2c1a9e",
                    "name": "app.start",
                    "timestamp": "2026-11-25T09:00:00Z",
                    "event_id": "evt_0001abcd",
                    "app_version": "1.4.2",
                    "os": "linux",
                    "properties": {"command": "init"},
                },
                request_only=True,
            )
        ],
    )
    def post(self, request, project: Project | None = None) -> JsonResponse:
        return native.handle_events(request._request, project)

    def dispatch(self, request, *args, **kwargs):
        if request.method == "POST":
            # The hot path: the contract reads and answers its own JSON, so DRF's request
            # wrapper, content negotiation and renderers would only add time per event.
            return native.handle_events(request, kwargs.get("project"))
        return super().dispatch(request, *args, **kwargs)


events_view = csrf_exempt(EventsView.as_view())
events_view.ingest = True  # served by middleware.IngestFastPathMiddleware


@csrf_exempt
def front_door(request: HttpRequest, slug: str, path: str = ""):
    """`/p/<slug>/<path>`: hand the request to the project's contract."""
    project = project_by_slug(slug)
    if project is None:
        return JsonResponse({"error": "not_found", "detail": f"no project {slug!r}"}, status=404)
    if project.contract == Contract.NATIVE and path == NATIVE_EVENTS_PATH:
        return events_view(request, project=project)  # the same DRF view as /api/v1/events
    return door_for(project.contract)(request, project, path)


front_door.ingest = True  # its POSTs are served by middleware.IngestFastPathMiddleware


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the cache both answer; 503 naming what failed otherwise."""
    failed = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        failed.append("database")
    try:
        cache.set("readyz", "1", 5)
        if cache.get("readyz") != "1":
            failed.append("cache")
    except Exception:
        failed.append("cache")
    if failed:
        response = JsonResponse({"status": "unavailable", "failed": failed}, status=503)
        response["Retry-After"] = "5"
        return response
    return JsonResponse({"status": "ok"})
