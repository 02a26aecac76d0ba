"""Anonymous aggregates that outlive the raw data: DailySummary and CohortSummary.

`refresh_aggregates` rewrites them for closed days and weeks whose rollups are still complete;
`snapshot_expiring` writes the missing ones for days the purge is about to delete, never
overwriting, so a purge killed half-way and run again cannot recount from half-deleted rollups.
"""

import datetime as dt
import operator
from functools import reduce

from django.db import transaction
from django.db.models import Count, DateField, Min, Q, Sum
from django.db.models.functions import TruncDate

from telemetry.analytics.active import raw_boundary
from telemetry.analytics.periods import DAY, WEEK, periods
from telemetry.ingest import rollups
from telemetry.models import (
    CohortSummary,
    DailyActivity,
    DailyCount,
    DailySummary,
    Install,
    Project,
)
from telemetry.services.stats import cohorts, day_start, week_start


def cutoff_day(*, project: Project, now: dt.datetime) -> dt.date:
    """The first UTC day kept: everything dated before it is past retention."""
    return now.astimezone(dt.UTC).date() - dt.timedelta(days=project.retention_days)


def daily_summaries(
    *, project: Project, start: dt.date, end: dt.date, only: set[dt.date] | None = None
) -> list[DailySummary]:
    """Summaries for days in [start, end) (or in `only`, when given) that have any activity,
    new install or event."""
    if only is not None and not only:
        return []
    days = {"day__in": sorted(only)} if only is not None else {}
    active = dict(
        DailyActivity.objects.filter(project=project, day__gte=start, day__lt=end, **days)
        .values("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    new = dict(
        Install.objects.filter(
            _first_seen_in(sorted(only) if only is not None else [], dt.timedelta(days=1)),
            project=project,
            first_seen__gte=day_start(start),
            first_seen__lt=day_start(end),
        )
        .annotate(day=TruncDate("first_seen", output_field=DateField()))
        .values("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    events = dict(
        DailyCount.objects.filter(project=project, day__gte=start, day__lt=end, **days)
        .values("day")
        .annotate(n=Sum("events"))
        .values_list("day", "n")
    )
    return [
        DailySummary(
            project=project,
            day=day,
            active_installs=active.get(day, 0),
            new_installs=new.get(day, 0),
            events=events.get(day, 0) or 0,
        )
        for day in sorted(set(active) | set(new) | set(events))
        if only is None or day in only
    ]


def _first_seen_in(starts: list[dt.date], length: dt.timedelta) -> Q:
    """Installs first seen in any of the spans [start, start + length), sorted starts; spans
    that touch are merged, so the index is read once per run of them (no filter if empty)."""
    runs: list[list[dt.date]] = []
    for start in starts:
        if runs and runs[-1][1] == start:
            runs[-1][1] = start + length
        else:
            runs.append([start, start + length])
    return reduce(
        operator.or_,
        (Q(first_seen__gte=day_start(a), first_seen__lt=day_start(b)) for a, b in runs),
        Q(),
    )


def _cohort_rows(project: Project, first_week: dt.date, last_week: dt.date, now: dt.datetime):
    return [
        CohortSummary(project=project, week_start=c.week_start, size=c.size, retained=c.retained)
        for c in cohorts(project=project, first_week=first_week, last_week=last_week, now=now)
    ]


def refresh_project(*, project: Project, now: dt.datetime) -> int:
    """Rewrite summaries of closed days and cohorts of weeks still wholly inside retention."""
    today = now.astimezone(dt.UTC).date()
    keep_from = cutoff_day(project=project, now=now)
    days = daily_summaries(project=project, start=keep_from, end=today)
    first_week = week_start(keep_from)
    if first_week < keep_from:
        first_week += dt.timedelta(days=7)  # a week straddling the cutoff is the purge's
    weeks = _cohort_rows(project, first_week, week_start(today), now)
    with transaction.atomic():
        DailySummary.objects.bulk_create(
            days,
            update_conflicts=True,
            unique_fields=["project", "day"],
            update_fields=["active_installs", "new_installs", "events"],
        )
        CohortSummary.objects.bulk_create(
            weeks,
            update_conflicts=True,
            unique_fields=["project", "week_start"],
            update_fields=["size", "retained"],
        )
    return len(days) + len(weeks)


def refresh_aggregates(*, now: dt.datetime) -> dict[str, int]:
    """Refresh every project; rows written per project slug."""
    rollups.fold_rollups()
    return {p.slug: refresh_project(project=p, now=now) for p in Project.objects.all()}


def snapshot_expiring(*, project: Project, now: dt.datetime) -> int:
    """Insert the missing summaries for days and cohort weeks the purge will cut into.

    One transaction, before any delete: either every expiring day is summarised or none is.
    """
    keep_from = cutoff_day(project=project, now=now)
    # The oldest activity day by partition probes (MIN(day) over ~90 expired activity
    # partitions took 54-164 ms to plan and read at 10M events, bench/RESULTS.md session 6).
    oldest_day = raw_boundary(project=project)
    oldest = [
        oldest_day if oldest_day is not None and oldest_day < keep_from else None,
        Install.objects.filter(project=project, first_seen__lt=day_start(keep_from)).aggregate(
            d=Min("first_seen")
        )["d"],
    ]
    oldest = [d.date() if isinstance(d, dt.datetime) else d for d in oldest if d is not None]
    if not oldest:
        return 0
    start = min(oldest)
    # Only days and weeks without a summary are counted: the nightly refresh has summarised
    # every closed day and full week, so a purge normally reads no expired row here
    # (bench/RESULTS.md, session 6). A day or week that has one keeps it: never overwritten.
    have_days = set(
        DailySummary.objects.filter(project=project, day__gte=start, day__lt=keep_from).values_list(
            "day", flat=True
        )
    )
    missing = set(periods(start, keep_from - dt.timedelta(days=1), DAY)) - have_days
    days = [
        s
        for s in daily_summaries(project=project, start=start, end=keep_from, only=missing)
        if s.active_installs or s.new_installs
    ]
    last_week = week_start(keep_from - dt.timedelta(days=1))
    have_weeks = set(
        CohortSummary.objects.filter(
            project=project, week_start__gte=week_start(start), week_start__lte=last_week
        ).values_list("week_start", flat=True)
    )
    weeks_missing = [w for w in periods(start, last_week, WEEK) if w not in have_weeks]
    # One week at a time: a week without installs is one empty index range, and the weeks in
    # between that have a summary are never read.
    weeks = [c for w in weeks_missing for c in _cohort_rows(project, w, w, now)]
    with transaction.atomic():
        DailySummary.objects.bulk_create(days, ignore_conflicts=True)
        CohortSummary.objects.bulk_create(weeks, ignore_conflicts=True)
    return len(days) + len(weeks)


def merge_history(
    *,
    project: Project,
    summaries: list[tuple[dt.date, int, int, int]],
    counts: list[tuple[dt.date, str, int]],
) -> None:
    """Keep imported history older than retention as anonymous aggregates only: per day
    (active installs, new installs, events) in DailySummary and events per name in DailyCount.

    Each value becomes the larger of the stored one and the imported one, never their sum: a
    second import of the same file changes nothing, and a day already summarised from live
    data is never lowered.
    """
    days = [d for d, *_ in summaries]
    have = {s.day: s for s in DailySummary.objects.filter(project=project, day__in=days)}
    # DailyCount is spread over shard rows: compare with their sum, and put any difference
    # into shard 0, so the day's total becomes the larger of the two.
    have_counts: dict[tuple[dt.date, str], int] = {}
    shard0: dict[tuple[dt.date, str], int] = {}
    for c in DailyCount.objects.filter(project=project, day__in={d for d, *_ in counts}):
        have_counts[(c.day, c.name)] = have_counts.get((c.day, c.name), 0) + c.events
        if c.shard == 0:
            shard0[(c.day, c.name)] = c.events
    rows = []
    for day, active, new, events in summaries:
        old = have.get(day)
        if old is not None:
            active = max(active, old.active_installs)
            new = max(new, old.new_installs)
            events = max(events, old.events)
        rows.append(
            DailySummary(
                project=project, day=day, active_installs=active, new_installs=new, events=events
            )
        )
    count_rows = [
        DailyCount(
            project=project,
            day=day,
            name=name,
            shard=0,
            events=shard0.get((day, name), 0) + max(0, n - have_counts.get((day, name), 0)),
        )
        for day, name, n in counts
    ]
    with transaction.atomic():
        DailySummary.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["project", "day"],
            update_fields=["active_installs", "new_installs", "events"],
            batch_size=1000,
        )
        DailyCount.objects.bulk_create(
            count_rows,
            update_conflicts=True,
            unique_fields=["project", "day", "name", "shard"],
            update_fields=["events"],
            batch_size=1000,
        )
