"""Cohort retention: installs grouped by the period of their first event, and how many of them
are active in each later period (k = 0 is the cohort itself, so retained[0] == size).
"""

import datetime as dt
from dataclasses import dataclass

from django.conf import settings

from telemetry.analytics import db
from telemetry.analytics.active import raw_boundary
from telemetry.analytics.periods import (
    DAY,
    WEEK,
    as_date,
    bucket_sql,
    db_date,
    label,
    period_start,
    today,
    utc_date_sql,
)
from telemetry.models import (
    CohortActivity,
    CohortSummary,
    DailyActivity,
    PeriodActivity,
    Project,
    RollupState,
)

MAX_COHORTS = {WEEK: 52, DAY: 90}
DEFAULT_COHORTS = {WEEK: 12, DAY: 30}
COHORT_ROLLUP = "cohorts"  # RollupState.name of CohortActivity


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


def _counts_sql(period: str) -> str:
    """SELECT (cohort start, period start, installs) for cohorts and periods in [%s, %s).

    Installs are reached only through their unique key, never by a range on first_seen: with
    no statistics (a table just loaded) the planner then still picks one index probe per
    activity row or a hash join, instead of a nested loop over every install (5 s → 23 ms at
    300k events, bench/RESULTS.md). The cohort bound is applied to the grouped rows.
    """
    cohort_sql = bucket_sql(utc_date_sql("i.first_seen"), period)
    # One activity row per (install, day) or (install, week): every cell is a plain COUNT(*).
    if period == DAY:
        source, day_column, kind = "telemetry_dailyactivity a", "a.day", ""
    else:
        source, day_column = "telemetry_periodactivity a", "a.start"
        kind = f" AND a.period = '{PeriodActivity.WEEK}'"
    return (
        f"SELECT {cohort_sql} AS c, {day_column} AS p, COUNT(*) AS n"
        f" FROM {source} JOIN telemetry_install i"
        " ON i.project_id = a.project_id AND i.install_id = a.install_id"
        f" WHERE a.project_id = %s{kind} AND {day_column} >= %s AND {day_column} < %s"
        f" GROUP BY 1, 2 HAVING {cohort_sql} >= %s"
    )


def counts_query(
    *, project: Project, period: str, first: dt.date, until: dt.date
) -> tuple[str, list]:
    """The cell counts of cohorts starting in [first, until), as SQL and parameters."""
    return _counts_sql(period), [project.pk, db_date(first), db_date(until), db_date(first)]


def fingerprint(*, project: Project) -> str:
    """What the cohort cells are computed from, in two small reads: any accepted event moves
    the event total, a purge moves the oldest activity day (deletions invalidate explicitly)."""
    oldest = raw_boundary(project=project)  # partition probes, read once per request
    return fingerprint_of(event_totals(project=project), oldest)


def event_totals(*, project: Project) -> tuple[int, int]:
    """(events counted, DailyCount rows) of the project: one read, `fingerprint`'s first half."""
    with db.connection().cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(SUM(events), 0), COUNT(*) FROM telemetry_dailycount"
            " WHERE project_id = %s",
            [project.pk],
        )
        events, rows = cursor.fetchone()
    return int(events), int(rows)


def fingerprint_of(totals: tuple[int, int], oldest: dt.date | None) -> str:
    events, rows = totals
    return f"{events}:{rows}:{oldest or '-'}"


def _rollup_counts(
    project: Project, period: str, first: dt.date, until: dt.date, now: dt.datetime
) -> dict[tuple[dt.date, dt.date], int] | None:
    """Cells from CohortActivity when its last rebuild still holds, else None."""
    state = RollupState.objects.filter(project=project, name=COHORT_ROLLUP).first()
    if state is None or state.as_of != today(now):
        return None
    lag = settings.TELEMETRY_COHORT_MAX_LAG_SECONDS
    recent = lag > 0 and (now - state.refreshed_at).total_seconds() <= lag
    if not recent and state.fingerprint != fingerprint(project=project):
        return None
    kind = CohortActivity.WEEK if period == WEEK else CohortActivity.DAY
    rows = CohortActivity.objects.filter(
        project=project, period=kind, cohort__gte=first, cohort__lt=until
    ).values_list("cohort", "start", "installs")
    return {(c, p): n for c, p, n in rows}


def retention(*, project: Project, period: str, cohorts: int, now: dt.datetime) -> list[Cohort]:
    """The last `cohorts` cohorts up to the current period, oldest first.

    A cohort's list runs from its own period to the current one (which may be incomplete).
    Cells come from the cohort rollup while it is current, else from the activity rollups.
    """
    cohorts = max(1, min(cohorts, MAX_COHORTS[period]))
    step = _step(period)
    current = period_start(today(now), period)
    first = current - step * (cohorts - 1)
    until = current + step  # exclusive
    cells = _rollup_counts(project, period, first, until, now)
    if cells is None:
        sql, params = counts_query(project=project, period=period, first=first, until=until)
        with db.connection().cursor() as cursor:
            cursor.execute(sql, params)
            cells = {(as_date(c), as_date(p)): n for c, p, n in cursor.fetchall()}
    counts: dict[tuple[dt.date, int], int] = {}
    for (c, p), n in cells.items():
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
