"""Small read-only queries over the rollups for the operator's terminal: active installs and
weekly cohorts. The aggregates snapshot (services/aggregates.py) reuses the cohort query.
"""

import datetime as dt
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, DateField
from django.db.models.functions import TruncWeek

from telemetry.models import DailyActivity, Install, PeriodActivity, Project


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
    active = _cohort_activity(project, first_week, last_week)
    counts = {(_as_date(c), _as_date(w)): n for c, w, n in active}
    result = []
    for start in sorted(sizes):
        weeks = max(0, (this_week - start).days // 7) + 1
        retained = [counts.get((start, start + dt.timedelta(weeks=k)), 0) for k in range(weeks)]
        result.append(Cohort(week_start=start, size=sizes[start], retained=retained))
    return result


def _week_sql(column: str) -> str:
    """The Monday of a date (or UTC timestamp) column, in this database's SQL."""
    if connection.vendor == "postgresql":
        return f"date_trunc('week', {column})::date"
    day = f"date({column})"
    return f"date({day}, '-' || ((CAST(strftime('%w', {day}) AS INTEGER) + 6) % 7) || ' days')"


def _cohort_activity(project: Project, first_week: dt.date, last_week: dt.date) -> list:
    """(cohort week, activity week, installs) for cohorts first seen in the range.

    Reads the weekly activity rollup (one row per install and week, so a plain count) joined
    to each row's install; counting distinct installs over the daily rows read about five
    times as many rows, most of a 1M-event purge's snapshot (bench/RESULTS.md).
    """
    postgres = connection.vendor == "postgresql"
    first_seen = "i.first_seen AT TIME ZONE 'UTC'" if postgres else "i.first_seen"
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_week_sql(first_seen)}, w.start, count(*)"
            " FROM telemetry_periodactivity w JOIN telemetry_install i"
            " ON i.project_id = w.project_id AND i.install_id = w.install_id"
            " WHERE w.project_id = %s AND w.period = %s AND w.start >= %s"
            " AND i.first_seen >= %s AND i.first_seen < %s GROUP BY 1, 2",
            [
                project.pk,
                PeriodActivity.WEEK,
                ops.adapt_datefield_value(first_week),
                ops.adapt_datetimefield_value(day_start(first_week)),
                ops.adapt_datetimefield_value(day_start(last_week + dt.timedelta(days=7))),
            ],
        )
        return [(_as_date(c), _as_date(w), n) for c, w, n in cursor.fetchall()]


def _as_date(value) -> dt.date:
    """A date from what a driver returns for one: a datetime, a date, or SQLite's text."""
    if isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value.date() if isinstance(value, dt.datetime) else value
