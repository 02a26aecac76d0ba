"""Per-project headline numbers for the admin: WAU of an ISO week and events of a day as
queryset expressions (one indexed count per project row), a 12-week WAU series with its 12 x 12
weekly retention, and the totals of the admin index."""

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from telemetry.analytics import active, retention
from telemetry.analytics.periods import WEEK, label, period_start, today
from telemetry.models import DailyCount, PeriodActivity, Project


def weekly_active(week: dt.date) -> Coalesce:
    """Installs active in the ISO week starting `week`, for the project of the outer row."""
    rows = (
        PeriodActivity.objects.filter(
            project=OuterRef("pk"), period=PeriodActivity.WEEK, start=week
        )
        .order_by()
        .values("project")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), Value(0))


def events_on(day: dt.date) -> Coalesce:
    """Events accepted for `day` (UTC), for the project of the outer row."""
    rows = (
        DailyCount.objects.filter(project=OuterRef("pk"), day=day)
        .order_by()
        .values("project")
        .annotate(n=Sum("events"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), Value(0))


def with_headlines(queryset, *, now: dt.datetime):
    """`queryset` of projects annotated with wau_this_week, wau_last_week and events_today."""
    week = period_start(today(now), WEEK)
    return queryset.annotate(
        wau_this_week=weekly_active(week),
        wau_last_week=weekly_active(week - dt.timedelta(days=7)),
        events_today=events_on(today(now)),
    )


@dataclass
class ProjectStats:
    weeks: list[tuple[str, int | None]]  # (ISO week label, active installs), oldest first
    cohorts: list[retention.Cohort]


def project_stats(*, project: Project, now: dt.datetime, weeks: int = 12) -> ProjectStats:
    """WAU over the last `weeks` ISO weeks and the weeks x weeks weekly retention grid."""
    end = today(now)
    start = period_start(end, WEEK) - dt.timedelta(weeks=weeks - 1)
    series = active.active_series(project=project, interval=WEEK, start=start, end=end)
    grid = retention.retention(project=project, period=WEEK, cohorts=weeks, now=now)
    return ProjectStats(weeks=[(p.label, p.active_installs) for p in series], cohorts=grid)


@dataclass
class Overview:
    week: str
    projects: int
    wau: int  # installs active this ISO week, summed over projects
    wau_last_week: int
    events_today: int
    busiest: list  # the projects with the most active installs this week


def overview(*, now: dt.datetime, top: int = 5) -> Overview:
    projects = list(with_headlines(Project.objects.all(), now=now))
    busiest = sorted(projects, key=lambda p: (-p.wau_this_week, p.slug))[:top]
    return Overview(
        week=label(period_start(today(now), WEEK), WEEK),
        projects=len(projects),
        wau=sum(p.wau_this_week for p in projects),
        wau_last_week=sum(p.wau_last_week for p in projects),
        events_today=sum(p.events_today for p in projects),
        busiest=[p for p in busiest if p.wau_this_week or p.events_today],
    )
