"""Cohort retention: installs grouped by the period of their first event, and how many of them
are active in each later period (k = 0 is the cohort itself, so retained[0] == size).
"""

import datetime as dt
from dataclasses import dataclass

from django.db import connection

from telemetry.analytics.periods import (
    DAY,
    WEEK,
    as_date,
    bucket_sql,
    day_start,
    db_date,
    db_datetime,
    label,
    period_start,
    today,
    utc_date_sql,
)
from telemetry.models import CohortSummary, DailyActivity, PeriodActivity, Project

MAX_COHORTS = {WEEK: 52, DAY: 90}
DEFAULT_COHORTS = {WEEK: 12, DAY: 30}


@dataclass
class Cohort:
    start: dt.date
    label: str
    size: int
    retained: list[int | None]  # retained[k]: cohort installs active k periods after its own

    def percentages(self) -> list[float | None]:
        return [
            None if n is None or not self.size else round(100 * n / self.size, 1)
            for n in self.retained
        ]


def _step(period: str) -> dt.timedelta:
    return dt.timedelta(days=7 if period == WEEK else 1)


def retention(*, project: Project, period: str, cohorts: int, now: dt.datetime) -> list[Cohort]:
    """The last `cohorts` cohorts up to the current period, oldest first.

    A cohort's list runs from its own period to the current one (which may be incomplete).
    """
    cohorts = max(1, min(cohorts, MAX_COHORTS[period]))
    step = _step(period)
    current = period_start(today(now), period)
    first = current - step * (cohorts - 1)
    until = current + step  # exclusive
    cohort_sql = bucket_sql(utc_date_sql("i.first_seen"), period)
    # One activity row per (install, day) or (install, week): every cell is a plain COUNT(*).
    if period == DAY:
        source, day_column, kind = "telemetry_dailyactivity a", "a.day", ""
    else:
        source, day_column = "telemetry_periodactivity a", "a.start"
        kind = f" AND a.period = '{PeriodActivity.WEEK}'"
    sql = (
        f"SELECT {cohort_sql} AS c, {day_column} AS p, COUNT(*)"
        f" FROM {source} JOIN telemetry_install i"
        " ON i.project_id = a.project_id AND i.install_id = a.install_id"
        f" WHERE a.project_id = %s{kind} AND {day_column} >= %s AND {day_column} < %s"
        " AND i.first_seen >= %s AND i.first_seen < %s GROUP BY 1, 2"
    )
    params = [
        project.pk,
        db_date(first),
        db_date(until),
        db_datetime(day_start(first)),
        db_datetime(day_start(until)),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    counts: dict[tuple[dt.date, int], int] = {}
    for c, p, n in rows:
        c, p = as_date(c), as_date(p)
        counts[(c, (p - c) // step)] = n

    summaries = {}
    if period == WEEK:
        oldest = DailyActivity.objects.filter(project=project).order_by("day").first()
        boundary = oldest.day if oldest else None
        if boundary is None or first < boundary:
            summaries = {
                s.week_start: s
                for s in CohortSummary.objects.filter(
                    project=project, week_start__gte=first, week_start__lt=until
                )
                if boundary is None or s.week_start < boundary
            }

    out = []
    start = first
    while start < until:
        width = (current - start) // step + 1
        raw = [counts.get((start, k), 0) for k in range(width)]
        summary = summaries.get(start)
        if summary is not None:
            # Purged weeks come from the snapshot; weeks after it are still in the rollups
            # (an install active then was not purged), so those counts stay exact.
            kept = list(summary.retained[:width])
            retained: list[int | None] = kept + raw[len(kept) :]
            size = summary.size
        else:
            retained = list(raw)
            size = raw[0]
        out.append(Cohort(start=start, label=label(start, period), size=size, retained=retained))
        start += step
    return out
