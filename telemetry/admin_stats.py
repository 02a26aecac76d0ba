"""What the admin shows beyond rows: WAU and events on the project list, a WAU sparkline and a
12 x 12 retention grid on the project page, and lists that stay fast at millions of rows
(counts capped then estimated, filters that never run DISTINCT over the events table)."""

from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connection
from django.utils import timezone

from telemetry.analytics import db, summary
from telemetry.models import DailyCount

EXACT_COUNT_CAP = 10_000


def planner_estimate(queryset) -> int | None:
    """PostgreSQL's estimate of the rows `queryset` matches (EXPLAIN, nothing is read)."""
    if connection.vendor != "postgresql":
        return None
    import json

    plan = json.loads(queryset.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    """Counts up to EXACT_COUNT_CAP matching rows exactly (a bounded scan); past that, shows the
    planner's estimate instead of a COUNT(*) over millions of rows on every page."""

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if connection.vendor != "postgresql":
            return qs.count()  # the embedded database is one machine's worth of data
        exact = qs.order_by().values("pk")[: EXACT_COUNT_CAP + 1].count()
        if exact <= EXACT_COUNT_CAP:
            return exact
        return max(exact, planner_estimate(qs) or 0)


class EventNameFilter(admin.SimpleListFilter):
    """Event names from the daily counts (a few hundred rows), not DISTINCT over every event."""

    title = "name"
    parameter_name = "name"

    def lookups(self, request, model_admin):
        names = DailyCount.objects.order_by("name").values_list("name", flat=True).distinct()
        return [(n, n) for n in names[:200]]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(name=value) if value else queryset


def sparkline(values: list[int | None], *, width: int = 240, height: int = 40) -> str:
    """SVG polyline points for `values` (None drawn as 0), scaled to the box."""
    if not values:
        return ""
    top = max(v or 0 for v in values) or 1
    step = width / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - (v or 0) / top * (height - 2) - 1:.1f}"
        for i, v in enumerate(values)
    )


class ProjectStatsMixin:
    """For ProjectAdmin: WAU this and last ISO week and events today on the list, and the WAU
    sparkline with the weekly retention grid on the change page (read on the analytics alias)."""

    stats_columns = ("wau_this_week", "wau_last_week", "events_today")

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        match = getattr(request, "resolver_match", None)
        if match is not None and match.url_name and match.url_name.endswith("_changelist"):
            qs = summary.with_headlines(qs, now=timezone.now())
        return qs

    @admin.display(description="WAU this week", ordering="wau_this_week")
    def wau_this_week(self, obj):
        return getattr(obj, "wau_this_week", None)

    @admin.display(description="WAU last week", ordering="wau_last_week")
    def wau_last_week(self, obj):
        return getattr(obj, "wau_last_week", None)

    @admin.display(description="events today", ordering="events_today")
    def events_today(self, obj):
        return getattr(obj, "events_today", None)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        project = self.get_object(request, object_id)
        if project is not None:
            extra_context["telemetry_stats"] = _stats_context(project)
        return super().change_view(request, object_id, form_url, extra_context)


def _stats_context(project) -> dict:
    try:
        stats = db.run(summary.project_stats, project=project, now=timezone.now())
    except db.AnalyticsTimeout:
        return {"unavailable": True}
    values = [n for _, n in stats.weeks]
    rows = [
        {
            "label": c.label,
            "size": c.size,
            "cells": list(zip(c.retained, c.percentages(), strict=True)),
        }
        for c in stats.cohorts
    ]
    return {
        "weeks": stats.weeks,
        "points": sparkline(values),
        "latest": values[-1] if values else None,
        "peak": max((v or 0 for v in values), default=0),
        "rows": rows,
        "offsets": range(len(stats.cohorts)),
    }
