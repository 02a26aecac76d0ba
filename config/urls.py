"""URL map: native API, front doors under /p/<slug>/, health, admin, schema."""

from django.contrib import admin
from django.http import HttpResponse, JsonResponse
from django.urls import include, path, register_converter
from django.views.defaults import page_not_found
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from telemetry.api import analytics, views
from telemetry.dashboard.security import limit_logins


class AnyPath:
    """Like `path:`, but also matching a newline: Django's `.+` stops at one, which sent
    `/p/<slug>/event%0A` past the front door to the HTML 404 page instead of the contract's own."""

    regex = r"(?s:.+)"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(AnyPath, "anypath")


def not_found(request, exception=None):
    """API clients get the API's JSON error for a URL that matches no route (a slug that is not a
    slug, say); people get the HTML page."""
    if request.path_info.startswith(("/api/", "/p/")):
        return JsonResponse(
            {"error": "not_found", "detail": f"no route {request.path_info}"}, status=404
        )
    return page_not_found(request, exception)


handler404 = not_found


@limit_logins
def admin_login(request, extra_context=None):
    """The admin's login, refused with 429 (one message for every account) once a hashed client
    IP or username has spent its attempts: the same budget as the dashboard login."""
    if getattr(request, "limited", False):
        response = HttpResponse("Too many login attempts; try again later.", status=429)
        response["Retry-After"] = "600"
        return response
    return admin.site.login(request, extra_context)


urlpatterns = [
    path("api/v1/events", views.events_view, name="events"),
    path("api/v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/projects/<slug:slug>/active", analytics.active_view, name="api-active"),
    path("api/v1/projects/<slug:slug>/retention", analytics.retention_view, name="api-retention"),
    path("api/v1/projects/<slug:slug>/breakdown", analytics.breakdown_view, name="api-breakdown"),
    path("p/<slug:slug>/<anypath:path>", views.front_door, name="front-door"),
    path("p/<slug:slug>/", views.front_door, name="front-door-root"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    path("", include("telemetry.dashboard.urls")),
]
