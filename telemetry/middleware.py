"""Middleware: host-based routing of front doors, the ingest fast path, and the rule that
nothing answers 500."""

import logging

from django.conf import settings
from django.core.exceptions import (
    BadRequest,
    ImproperlyConfigured,
    PermissionDenied,
    SuspiciousOperation,
)
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

from telemetry.checks import COLLECTSTATIC_HINT
from telemetry.ingest.auth import project_for_host

log = logging.getLogger(__name__)

# Exceptions Django itself turns into 400/403/404 responses: not server failures.
CLIENT_ERRORS = (Http404, PermissionDenied, SuspiciousOperation, BadRequest)
# What ManifestStaticFilesStorage raises for a name missing from the manifest (no collectstatic).
MANIFEST_MISSING = "Missing staticfiles manifest entry"


class NeverServerErrorMiddleware:
    """Turn any unhandled exception into a logged JSON 503 with Retry-After; mark no-store.

    The log names the view and the exception type only: no body, no header, no client address.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Cache-Control" not in response:
            response["Cache-Control"] = "no-store"
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return unexpected_error(request, exception)


def unexpected_error(request: HttpRequest, exception: Exception) -> HttpResponse | None:
    """The logged 503 for an exception no view handled; None for the ones Django answers."""
    if isinstance(exception, CLIENT_ERRORS):
        return None  # Django answers these with their own 4xx
    if settings.DEBUG and not isinstance(exception, DatabaseError):
        return None
    service = "database" if isinstance(exception, DatabaseError) else "server"
    log.error(
        "unhandled %s on %s %s%s",
        type(exception).__name__,
        request.method,
        request.path_info,
        _configuration_hint(exception),
    )
    return service_unavailable(service)


def _configuration_hint(exception: Exception) -> str:
    """The message of an error the operator must fix (it names files and settings, never
    request data); other exceptions' messages may quote input and are not logged."""
    message = str(exception)
    if isinstance(exception, ImproperlyConfigured):
        return f": {message[:300]}"
    if isinstance(exception, ValueError) and message.startswith(MANIFEST_MISSING):
        return f": {message[:300]}; {COLLECTSTATIC_HINT}"
    return ""


def service_unavailable(service: str) -> JsonResponse:
    response = JsonResponse(
        {"error": "service_unavailable", "detail": f"{service} unavailable, retry later"},
        status=503,
    )
    response["Retry-After"] = str(settings.TELEMETRY_RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class HostRoutingMiddleware:
    """A request whose Host is one of a project's hostnames is served by that project's front
    door at the root path, exactly as the original worker was: `/x` becomes `/p/<slug>/x`."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        host = _host_without_port(request.META.get("HTTP_HOST", ""))
        if host and not request.path_info.startswith("/p/"):
            try:
                project = project_for_host(host)
            except DatabaseError:
                # Liveness and readiness must still answer; views that need the database
                # fail on their own with a 503.
                project = None
            if project is not None:
                request.path_info = f"/p/{project.slug}{request.path_info}"
        return self.get_response(request)


def _host_without_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0]


class IngestFastPathMiddleware:
    """A POST to an ingest view (marked `ingest = True`: the native API and the front doors) is
    answered here, below host routing, without the browser middleware after this one: sessions,
    CSRF (every ingest view is exempt), authentication and messages serve no purpose there and
    cost a share of the hot path (bench/RESULTS.md). Its response gets the same headers."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            try:
                match = resolve(request.path_info)
            except Resolver404:
                match = None
            if match is not None and getattr(match.func, "ingest", False):
                request.resolver_match = match
                try:
                    response = match.func(request, *match.args, **match.kwargs)
                except Exception as exc:
                    response = unexpected_error(request, exc)
                    if response is None:
                        raise
                if "X-Frame-Options" not in response:
                    response["X-Frame-Options"] = settings.X_FRAME_OPTIONS
                return response
        return self.get_response(request)
