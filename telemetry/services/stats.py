"""Small read-only queries over the rollups for the operator's terminal: active installs and
weekly cohorts. The aggregates snapshot (services/aggregates.py) reuses the cohort query.
"""

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, DateField, OuterRef, Subquery
from django.db.models.functions import TruncDate, TruncWeek

from telemetry.models import DailyActivity, Install, Project


def week_start(day: dt.date) -> dt.date:
    """The Monday of `day`'s ISO week."""
    return day - dt.timedelta(days=day.weekday())


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


@dataclass
class Active:
    dau: int
    wau: int
    mau: int


def active_installs(*, project: Project, now: dt.datetime) -> Active:
    """Distinct installs with activity today, in the last 7 and in the last 30 UTC days."""
    today = now.astimezone(dt.UTC).date()

    def since(days: int) -> int:
        return (
            DailyActivity.objects.filter(
                project=project, day__gt=today - dt.timedelta(days=days), day__lte=today
            )
            .values("install_id")
            .distinct()
            .count()
        )

    return Active(dau=since(1), wau=since(7), mau=since(30))


@dataclass
class Cohort:
    week_start: dt.date
    size: int
    retained: list[int]  # retained[k]: cohort installs active in week k after week_start


def cohorts(
    *, project: Project, first_week: dt.date, last_week: dt.date, now: dt.datetime
) -> list[Cohort]:
    """Weekly cohorts by first_seen from first_week to last_week (Mondays, inclusive).

    retained runs from the cohort's own week to the week of `now`; weeks with no activity are 0.
    """
    this_week = week_start(now.astimezone(dt.UTC).date())
    sized = (
        Install.objects.filter(
            project=project,
            first_seen__gte=day_start(first_week),
            first_seen__lt=day_start(last_week + dt.timedelta(days=7)),
        )
        .annotate(week=TruncWeek("first_seen", output_field=DateField()))
        .values("week")
        .annotate(n=Count("id"))
        .values_list("week", "n")
    )
    sizes = {_as_date(w): n for w, n in sized}
    if not sizes:
        return []
    first_seen = Install.objects.filter(project=project, install_id=OuterRef("install_id"))
    active = (
        DailyActivity.objects.filter(project=project, day__gte=first_week)
        .annotate(
            cohort=TruncWeek(
                TruncDate(Subquery(first_seen.values("first_seen")[:1])), output_field=DateField()
            ),
            week=TruncWeek("day", output_field=DateField()),
        )
        .filter(cohort__gte=first_week, cohort__lte=last_week)
        .values("cohort", "week")
        .annotate(n=Count("install_id", distinct=True))
        .values_list("cohort", "week", "n")
    )
    counts = {(_as_date(c), _as_date(w)): n for c, w, n in active}
    result = []
    for start in sorted(sizes):
        weeks = max(0, (this_week - start).days // 7) + 1
        retained = [counts.get((start, start + dt.timedelta(weeks=k)), 0) for k in range(weeks)]
        result.append(Cohort(week_start=start, size=sizes[start], retained=retained))
    return result


def _as_date(value) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value
