"""Dashboard, login and public-page routes (included from config/urls.py)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from telemetry.dashboard import views

urlpatterns = [
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("dashboard/", views.index, name="dashboard"),
    path("dashboard/<slug:slug>/", views.overview, name="dashboard-overview"),
    path("dashboard/<slug:slug>/retention/", views.retention_page, name="dashboard-retention"),
    path("dashboard/<slug:slug>/breakdown/", views.breakdown_page, name="dashboard-breakdown"),
    path("dashboard/<slug:slug>/errors/", views.errors_page, name="dashboard-errors"),
    path("dashboard/<slug:slug>/events/", views.events_page, name="dashboard-events"),
    path(
        "dashboard/<slug:slug>/events/export.<str:fmt>",
        views.export,
        name="dashboard-export",
    ),
    path("dashboard/<slug:slug>/setup/", views.setup_page, name="dashboard-setup"),
    path("dashboard/<slug:slug>/setup/keys/", views.issue_key, name="dashboard-issue-key"),
    path(
        "dashboard/<slug:slug>/setup/keys/<int:key_id>/revoke/",
        views.revoke_key,
        name="dashboard-revoke-key",
    ),
    path("public/<slug:slug>/", views.public_page, name="public-page"),
]
