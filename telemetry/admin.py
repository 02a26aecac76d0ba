"""Admin: projects with their keys and members; events read-only; rollups and runs browsable."""

from django.contrib import admin
from django.urls import reverse

from telemetry.admin_keys import IngestKeyInline, ProjectKeysAdminMixin
from telemetry.admin_stats import EstimatedCountPaginator, EventNameFilter, ProjectStatsMixin
from telemetry.models import (
    CohortSummary,
    DailyActivity,
    DailyCount,
    DailySummary,
    Event,
    Install,
    IpSalt,
    PeriodActivity,
    Project,
    TaskRun,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the pipeline or the jobs: look, filter, never edit by hand."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Project)
class ProjectAdmin(ProjectKeysAdminMixin, ProjectStatsMixin, admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "contract",
        *ProjectStatsMixin.stats_columns,
        "retention_days",
        "install_rate",
        "ip_rate",
        "created_at",
    ]
    list_filter = ["contract", "strict", "redact_pii", "public_page"]
    search_fields = ["slug", "name"]
    filter_horizontal = ["members"]
    inlines = [IngestKeyInline]
    readonly_fields = ["created_at"]

    def view_on_site(self, obj):
        # The change page's "View on site" button opens the project's dashboard.
        return reverse("dashboard-overview", args=[obj.slug])


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "install_id",
        "project",
        "timestamp",
        "received_at",
        "app_version",
        "os",
    ]
    # No date_hierarchy or plain name filter: both run DISTINCT over every event.
    list_filter = ["project", EventNameFilter, ("received_at", admin.DateFieldListFilter)]
    search_fields = ["install_id", "event_id", "name", "session_id"]
    list_select_related = ["project"]
    show_full_result_count = False  # COUNT(*) over millions of rows on every page is slow
    paginator = EstimatedCountPaginator


@admin.register(Install)
class InstallAdmin(ReadOnlyAdmin):
    list_display = [
        "install_id",
        "project",
        "first_seen",
        "last_seen",
        "last_version",
        "os",
        "event_count",
    ]
    list_filter = ["project", "os"]
    search_fields = ["install_id"]
    list_select_related = ["project"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    actions = ["delete_with_data"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        # The stock bulk delete would leave the install's events and activity behind.
        actions.pop("delete_selected", None)
        return actions

    @admin.action(
        description="Delete selected installs with all their events and activity",
        permissions=["delete"],
    )
    def delete_with_data(self, request, queryset):
        from telemetry.services.deletion import delete_install

        totals = {"installs": 0, "events": 0, "daily_activity": 0}
        for install in queryset.select_related("project"):
            deleted = delete_install(project=install.project, install_id=install.install_id)
            for k in totals:
                totals[k] += deleted.counts.get(k, 0)
        self.message_user(
            request,
            f"Deleted {totals['installs']} installs, {totals['events']} events and"
            f" {totals['daily_activity']} activity rows.",
        )


@admin.register(DailyActivity)
class DailyActivityAdmin(ReadOnlyAdmin):
    list_display = ["day", "install_id", "project", "events", "app_version", "os"]
    list_filter = ["project", ("day", admin.DateFieldListFilter)]
    search_fields = ["install_id"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator


@admin.register(PeriodActivity)
class PeriodActivityAdmin(ReadOnlyAdmin):
    list_display = ["start", "period", "install_id", "project"]
    list_filter = ["project", "period"]
    search_fields = ["install_id"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator


@admin.register(DailyCount)
class DailyCountAdmin(ReadOnlyAdmin):
    list_display = ["day", "name", "project", "events"]
    list_filter = ["project", "name"]
    date_hierarchy = "day"


@admin.register(DailySummary)
class DailySummaryAdmin(ReadOnlyAdmin):
    list_display = ["day", "project", "active_installs", "new_installs", "events"]
    list_filter = ["project"]


@admin.register(CohortSummary)
class CohortSummaryAdmin(ReadOnlyAdmin):
    list_display = ["week_start", "project", "size"]
    list_filter = ["project"]


@admin.register(IpSalt)
class IpSaltAdmin(ReadOnlyAdmin):
    list_display = ["day", "created_at"]
    fields = ["day", "created_at"]  # never show the salt itself


@admin.register(TaskRun)
class TaskRunAdmin(ReadOnlyAdmin):
    list_display = ["task", "started_at", "finished_at", "ok", "rows", "duration_ms", "error"]
    list_filter = ["task", "ok"]
    date_hierarchy = "started_at"
