"""URL map: native API, front doors under /p/<slug>/, health, admin, schema."""

from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from telemetry.api import analytics, views

urlpatterns = [
    path("api/v1/events", views.events_view, name="events"),
    path("api/v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/projects/<slug:slug>/active", analytics.active_view, name="api-active"),
    path("api/v1/projects/<slug:slug>/retention", analytics.retention_view, name="api-retention"),
    path("api/v1/projects/<slug:slug>/breakdown", analytics.breakdown_view, name="api-breakdown"),
    path("p/<slug:slug>/<path:path>", views.front_door, name="front-door"),
    path("p/<slug:slug>/", views.front_door, name="front-door-root"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
]
