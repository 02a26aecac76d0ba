"""Active and new installs and events per calendar period, rolling DAU/WAU/MAU, versions and OS.

Everything reads the rollups (DailyActivity, Install, DailyCount), closed periods their counted
rows (ClosedPeriod, RollingActivity) while those still match; for days older than the oldest
remaining activity row, the anonymous DailySummary/CohortSummary snapshots stand in.
"""

import datetime as dt
from dataclasses import dataclass

from django.db.models import Min, Sum

from telemetry.analytics import db
from telemetry.analytics.periods import (
    DAY,
    MONTH,
    WEEK,
    as_date,
    bucket_sql,
    day_start,
    db_date,
    db_datetime,
    label,
    next_period,
    period_end,
    period_start,
    periods,
    utc_date_sql,
)
from telemetry.models import (
    ClosedPeriod,
    CohortSummary,
    DailyActivity,
    DailyCount,
    DailySummary,
    PeriodActivity,
    Project,
    RollingActivity,
)


@dataclass
class Period:
    start: dt.date
    label: str
    active_installs: int | None  # None: the raw rollups are purged and no snapshot can say
    new_installs: int
    events: int


@dataclass
class Rolling:
    day: dt.date
    dau: int
    wau: int
    mau: int

    @property
    def stickiness(self) -> float | None:
        return round(self.dau / self.mau, 4) if self.mau else None


def _rows(sql: str, params: list) -> list[tuple]:
    with db.connection().cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def has_events(*, project: Project) -> bool:
    """Whether the project ever counted an event (DailyCount outlives the raw purge)."""
    return DailyCount.objects.filter(project=project).exists()


def raw_boundary(*, project: Project) -> dt.date | None:
    """The oldest day still in DailyActivity: before it only the anonymous snapshots remain.
    Read once per request (every selector of a page asks)."""
    return db.memo(("raw_boundary", project.pk), lambda: _oldest_activity_day(project))


# Activity partitions one probe covers. MIN(day) over the partitioned table plans every daily
# partition, 7-30 ms at 90 days before it reads one index entry (bench/RESULTS.md); a probe
# bounded by day is planned for its own partitions only.
PROBE_PARTITIONS = 16


def _oldest_activity_day(project: Project) -> dt.date | None:
    days = _activity_partitions() if db.vendor() == "postgresql" else []
    if not days or None in days:
        return DailyActivity.objects.filter(project=project).aggregate(d=Min("day"))["d"]
    # Rows live only in the daily partitions (there is no default one): the first probe, oldest
    # partitions first, that finds a row has the oldest day. The last probe is open-ended.
    for i in range(0, len(days), PROBE_PARTITIONS):
        sql = "SELECT MIN(day) FROM telemetry_dailyactivity WHERE project_id = %s"
        params: list = [project.pk]
        if i:
            sql += " AND day >= %s"
            params.append(db_date(days[i]))
        if i + PROBE_PARTITIONS < len(days):
            sql += " AND day < %s"
            params.append(db_date(days[i + PROBE_PARTITIONS]))
        ((found,),) = _rows(sql, params)
        if found is not None:
            return as_date(found)
    return None


def _activity_partitions() -> list[dt.date | None]:
    """The first day of every DailyActivity partition, oldest first (none: not partitioned)."""
    return [
        d
        for (d,) in _rows(
            "SELECT to_date(substring(c.relname from '_p([0-9]{8})$'), 'YYYYMMDD') AS d"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass('telemetry_dailyactivity') ORDER BY d",
            [],
        )
    ]


def active_counts(
    *, project: Project, start: dt.date, end: dt.date, interval: str
) -> dict[dt.date, int]:
    """Distinct installs with activity per period start, for periods in [start, end]."""
    if interval == DAY:
        # Closed days from their RollingActivity rows; the rest (today, days with late events)
        # counted.
        cached = closed_days(project=project, first=start, last=end)
        out = {d: row.dau for d, row in cached.items()}
        missing = _missing(start, end, cached)
        if missing:
            wanted = set(missing)
            counted = active_counted(project=project, start=missing[0], end=missing[-1])
            out.update({d: n for d, n in counted.items() if d in wanted})
        return out
    return active_counted(project=project, start=start, end=end, interval=interval)


def active_counted(
    *, project: Project, start: dt.date, end: dt.date, interval: str = DAY
) -> dict[dt.date, int]:
    """Distinct installs with activity per period start in [start, end], counted from the
    activity rows (periods without activity absent)."""
    if interval == DAY:
        # One row per (install, day): counting rows is counting installs.
        rows = _rows(
            "SELECT day, COUNT(*) FROM telemetry_dailyactivity"
            " WHERE project_id = %s AND day >= %s AND day <= %s GROUP BY 1",
            [project.pk, db_date(start), db_date(end)],
        )
        return {as_date(d): n for d, n in rows}
    # Weeks and months: the PeriodActivity rows, one per install and period.
    kind = PeriodActivity.WEEK if interval == WEEK else PeriodActivity.MONTH
    rows = _rows(
        "SELECT start, COUNT(*) FROM telemetry_periodactivity"
        " WHERE project_id = %s AND period = %s AND start >= %s AND start <= %s GROUP BY 1",
        [project.pk, kind, db_date(period_start(start, interval)), db_date(end)],
    )
    return {as_date(p): n for p, n in rows}


def _missing(start: dt.date, end: dt.date, cached: dict) -> list[dt.date]:
    """The days of [start, end] without a current RollingActivity row, oldest first."""
    days = (start + dt.timedelta(days=i) for i in range((end - start).days + 1))
    return [d for d in days if d not in cached]


def new_counts(*, project: Project, start: dt.date, end: dt.date) -> dict[dt.date, int]:
    """Installs whose first event falls on each day in [start, end]."""
    rows = _rows(
        f"SELECT {utc_date_sql('first_seen')} AS d, COUNT(*) FROM telemetry_install"
        " WHERE project_id = %s AND first_seen >= %s AND first_seen < %s GROUP BY 1",
        [
            project.pk,
            db_datetime(day_start(start)),
            db_datetime(day_start(end + dt.timedelta(days=1))),
        ],
    )
    return {as_date(d): n for d, n in rows}


def event_counts(
    *, project: Project, start: dt.date, end: dt.date, names: list[str] | None = None
) -> dict[dt.date, int]:
    qs = DailyCount.objects.filter(project=project, day__gte=start, day__lte=end)
    if names is not None:
        qs = qs.filter(name__in=names)
    return {d: n for d, n in qs.values("day").annotate(n=Sum("events")).values_list("day", "n")}


def _weekly_active_from_cohorts(project: Project, weeks: list[dt.date]) -> dict[dt.date, int]:
    """WAU of purged weeks: the sum, over every earlier cohort, of its retained count that week."""
    if not weeks:
        return {}
    cohorts = list(
        CohortSummary.objects.filter(project=project, week_start__lte=max(weeks)).values_list(
            "week_start", "retained"
        )
    )
    out = {}
    for week in weeks:
        total = 0
        for start, retained in cohorts:
            if start > week:
                continue
            k = (week - start).days // 7
            if k >= len(retained):
                break
            total += retained[k]
        else:
            if cohorts:
                out[week] = total
    return out


def active_series(*, project: Project, interval: str, start: dt.date, end: dt.date) -> list[Period]:
    """One Period per calendar period touching [start, end], zero-filled, oldest first."""
    buckets = periods(start, end, interval)
    first, last = buckets[0], next_period(buckets[-1], interval) - dt.timedelta(days=1)
    closed = closed_periods(project=project, interval=interval, first=first, last=last)
    # The rest (the open period, periods before the oldest activity day or with late events),
    # counted run by run: after a purge the purged weeks and the open one are two short runs,
    # not one span over every closed week between them.
    active: dict[dt.date, int] = {}
    new_by_day: dict[dt.date, int] = {}
    events_by_day: dict[dt.date, int] = {}
    boundary = raw_boundary(project=project)
    for lo, hi in _runs([p for p in buckets if p not in closed], interval):
        # A period that ended before the oldest activity day has no activity rows left (the
        # purge took them, or there never were any): counting them found nothing and cost 43 ms
        # of the weekly API at 10M after a purge (bench/RESULTS.md). Snapshots answer below.
        first_active = lo
        while boundary is not None and period_end(first_active, interval) < boundary:
            first_active = next_period(first_active, interval)
        if first_active <= hi:
            active.update(
                active_counts(project=project, start=first_active, end=hi, interval=interval)
            )
        # Installs first seen before the oldest activity day are only those the purge kept
        # (active since): those days' new installs are the purge's snapshot, below.
        new_from = lo if boundary is None else max(lo, boundary)
        if new_from <= hi:
            new_by_day.update(new_counts(project=project, start=new_from, end=hi))
        events_by_day.update(event_counts(project=project, start=lo, end=hi))

    purged_active: dict[dt.date, int] = {}
    purged: set[dt.date] = set()
    if boundary is None or first < boundary:
        summaries = DailySummary.objects.filter(
            project=project, day__gte=first, day__lte=last
        ).values_list("day", "active_installs", "new_installs", "events")
        for day, act, new, events in summaries:
            if boundary is not None and day >= boundary:
                continue
            purged.add(day)
            new_by_day.setdefault(day, new)
            events_by_day.setdefault(day, events)
            purged_active[day] = act
    if interval == WEEK:
        stale = [w for w in buckets if any(period_start(d, WEEK) == w for d in purged)]
        purged_active.update(_weekly_active_from_cohorts(project, stale))

    out = []
    for p in buckets:
        row = closed.get(p)
        if row is not None:
            out.append(
                Period(
                    start=p,
                    label=label(p, interval),
                    active_installs=row.active_installs,
                    new_installs=row.new_installs,
                    events=row.events,
                )
            )
            continue
        p_end = next_period(p, interval)
        days_in = [d for d in purged if p <= d < p_end]
        if not days_in:
            act: int | None = active.get(p, 0)
        elif interval == MONTH:
            act = None  # distinct installs over a partly purged month cannot be rebuilt
        else:
            act = purged_active.get(p)
        out.append(
            Period(
                start=p,
                label=label(p, interval),
                active_installs=act,
                new_installs=sum(n for d, n in new_by_day.items() if p <= d < p_end),
                events=sum(n for d, n in events_by_day.items() if p <= d < p_end),
            )
        )
    return out


def _runs(starts: list[dt.date], interval: str) -> list[tuple[dt.date, dt.date]]:
    """[first day, last day] of each run of consecutive periods among `starts` (sorted)."""
    runs: list[tuple[dt.date, dt.date]] = []
    for p in starts:
        if runs and next_period(runs[-1][1], DAY) == p:
            runs[-1] = (runs[-1][0], period_end(p, interval))
        else:
            runs.append((p, period_end(p, interval)))
    return runs


MAU_DAYS, WAU_DAYS = 30, 7


def rolling(*, project: Project, day: dt.date) -> Rolling:
    """DAU, WAU and MAU as distinct installs active in the 1, 7 and 30 days ending on `day`.

    Three exact sources, cheapest first: the installs' last-seen times when nothing is dated
    after `day` (the usual "up to today"), the day's RollingActivity row while it still matches
    its inputs, else a count over the month of daily activity (bench/RESULTS.md, issue 11)."""
    if not _seen_after(project, day):
        return _rolling_from_installs(project, day)
    row = closed_days(project=project, first=day, last=day).get(day)
    if row is not None:
        return Rolling(day=day, dau=row.dau, wau=row.wau, mau=row.mau)
    return rolling_counted(project=project, day=day)


def _rolling_from_installs(project: Project, day: dt.date) -> Rolling:
    """Rolling counts from Install.last_seen (the install's latest event), for a `day` after
    which no install was seen: then an install's last event falls in the N days ending on `day`
    exactly when it was active in them. One index range over the month's active installs
    instead of every activity row of the month."""
    d7 = day - dt.timedelta(days=WAU_DAYS - 1)
    d30 = day - dt.timedelta(days=MAU_DAYS - 1)
    (row,) = _rows(
        "SELECT COUNT(CASE WHEN last_seen >= %s THEN 1 END),"
        " COUNT(CASE WHEN last_seen >= %s THEN 1 END), COUNT(*)"
        " FROM telemetry_install WHERE project_id = %s AND last_seen >= %s",
        [
            db_datetime(day_start(day)),
            db_datetime(day_start(d7)),
            project.pk,
            db_datetime(day_start(d30)),
        ],
    )
    return Rolling(day=day, dau=row[0], wau=row[1], mau=row[2])


def rolling_counted(*, project: Project, day: dt.date) -> Rolling:
    """Rolling DAU/WAU/MAU counted from the month of daily activity ending on `day`."""
    d7 = day - dt.timedelta(days=WAU_DAYS - 1)
    d30 = day - dt.timedelta(days=MAU_DAYS - 1)
    # Each install's last active day in the 30, by one hash aggregate, then three plain counts:
    # three COUNT(DISTINCT) would each sort the month's activity rows.
    (row,) = _rows(
        "SELECT COUNT(CASE WHEN last = %s THEN 1 END), COUNT(CASE WHEN last >= %s THEN 1 END),"
        " COUNT(*) FROM (SELECT install_id, MAX(day) AS last FROM telemetry_dailyactivity"
        " WHERE project_id = %s AND day >= %s AND day <= %s GROUP BY install_id) x",
        [db_date(day), db_date(d7), project.pk, db_date(d30), db_date(day)],
    )
    return Rolling(day=day, dau=row[0], wau=row[1], mau=row[2])


def versions_counted(*, project: Project, start: dt.date, end: dt.date) -> list[tuple]:
    """(day, app_version, installs) for every day in [start, end], from the daily activity."""
    # Per day, an install has one activity row: distinct installs are rows.
    return _rows(
        "SELECT day, app_version, COUNT(*) FROM telemetry_dailyactivity"
        " WHERE project_id = %s AND day >= %s AND day <= %s GROUP BY 1, 2",
        [project.pk, db_date(start), db_date(end)],
    )


def daily_events(*, project: Project, first: dt.date, last: dt.date) -> dict[dt.date, int]:
    """Events counted per day in [first, last] (days without events absent), from DailyCount."""
    return {
        as_date(d): int(n)
        for d, n in _rows(
            "SELECT day, SUM(events) FROM telemetry_dailycount"
            " WHERE project_id = %s AND day >= %s AND day <= %s GROUP BY day",
            [project.pk, db_date(first), db_date(last)],
        )
    }


def window_fingerprints(*, project: Project, first: dt.date, last: dt.date) -> dict[dt.date, str]:
    """What a RollingActivity row of each day in [first, last] is counted from: the events of
    the 30 days ending on it, and the oldest activity day among them. Every accepted event
    (late ones too) moves the first, a purge the second; deleting an install clears the rows.
    Read from DailyCount, a few thousand rows for any range."""
    lo = first - dt.timedelta(days=MAU_DAYS - 1)
    per_day = daily_events(project=project, first=lo, last=last)
    oldest = raw_boundary(project=project)
    out: dict[dt.date, str] = {}
    total, day = 0, lo
    while day <= last:
        total += per_day.get(day, 0)
        window_start = day - dt.timedelta(days=MAU_DAYS - 1)
        if window_start > lo:
            total -= per_day.get(window_start - dt.timedelta(days=1), 0)
        if day >= first:
            boundary = "-" if oldest is None else max(oldest, window_start).isoformat()
            out[day] = f"{total}:{boundary}"
        day += dt.timedelta(days=1)
    return out


PERIOD_KINDS = {DAY: ClosedPeriod.DAY, WEEK: ClosedPeriod.WEEK, MONTH: ClosedPeriod.MONTH}


def period_fingerprints(*, project: Project, oldest: dt.date, last: dt.date) -> dict[dt.date, str]:
    """What a ClosedPeriod row ending on each day of [oldest, last] is counted from: the events
    counted from the oldest activity day `oldest` through that day, and `oldest`.

    Every accepted event moves the sum of its own day and of every day after it, which covers
    the counts of its period and of the later period an install's first day moved out of; a
    purge moves `oldest` (and with it every sum); deleting an install clears the rows. Read
    from DailyCount, one row per day, event name and shard."""
    per_day = daily_events(project=project, first=oldest, last=last)
    return fingerprints_from(per_day, oldest=oldest, last=last)


def fingerprints_from(per_day: dict[dt.date, int], *, oldest: dt.date, last: dt.date) -> dict:
    """`period_fingerprints` from events per day already read (at least [oldest, last])."""
    out: dict[dt.date, str] = {}
    total, day = 0, oldest
    while day <= last:
        total += per_day.get(day, 0)
        out[day] = f"{total}:{oldest.isoformat()}"
        day += dt.timedelta(days=1)
    return out


def closed_periods(
    *, project: Project, interval: str, first: dt.date, last: dt.date
) -> dict[dt.date, ClosedPeriod]:
    """The ClosedPeriod rows of the periods starting in [first, last] that still match what
    they were counted from; only periods that begin on or after the oldest activity day (the
    others mix in purged days, answered from the snapshots)."""
    oldest = raw_boundary(project=project)
    if oldest is None:
        return {}
    rows = list(
        ClosedPeriod.objects.filter(
            project=project,
            period=PERIOD_KINDS[interval],
            start__gte=max(first, oldest),
            start__lte=last,
        )
    )
    if not rows:
        return {}
    ends = {r.start: period_end(r.start, interval) for r in rows}
    current = period_fingerprints(project=project, oldest=oldest, last=max(ends.values()))
    return {r.start: r for r in rows if current.get(ends[r.start]) == r.fingerprint}


def closed_days(
    *, project: Project, first: dt.date, last: dt.date
) -> dict[dt.date, RollingActivity]:
    """The RollingActivity rows of [first, last] that still match what they were counted from."""
    rows = list(RollingActivity.objects.filter(project=project, day__gte=first, day__lte=last))
    if not rows:
        return {}
    current = window_fingerprints(
        project=project, first=min(r.day for r in rows), last=max(r.day for r in rows)
    )
    return {r.day: r for r in rows if current.get(r.day) == r.fingerprint}


def version_adoption(
    *, project: Project, start: dt.date, end: dt.date, interval: str = DAY, top: int = 6
) -> dict:
    """Active installs per app version per period; versions beyond the `top` most used are
    folded into "other"."""
    if interval == DAY:
        rows = _versions_by_day(project, start, end)
    else:
        # Longer periods group by install first (a hash aggregate), then count.
        rows = _rows(
            "SELECT p, app_version, COUNT(*) FROM ("
            f"SELECT {bucket_sql('day', interval)} AS p, app_version, install_id"
            " FROM telemetry_dailyactivity WHERE project_id = %s AND day >= %s AND day <= %s"
            " GROUP BY 1, 2, 3) x GROUP BY 1, 2",
            [project.pk, db_date(start), db_date(end)],
        )
    totals: dict[str, int] = {}
    for _, version, n in rows:
        totals[version or "unknown"] = totals.get(version or "unknown", 0) + n
    keep = sorted(totals, key=lambda v: -totals[v])[:top]
    buckets = periods(start, end, interval)
    index = {p: i for i, p in enumerate(buckets)}
    series: dict[str, list[int]] = {v: [0] * len(buckets) for v in keep}
    for p, version, n in rows:
        name = version or "unknown"
        if name not in series:
            name = "other"
            series.setdefault("other", [0] * len(buckets))
        i = index.get(period_start(as_date(p), interval))
        if i is not None:
            series[name][i] += n
    return {"labels": [label(p, interval) for p in buckets], "series": series}


def _versions_by_day(project: Project, start: dt.date, end: dt.date) -> list[tuple]:
    """(day, version, installs) over [start, end]: closed days from their RollingActivity rows,
    the days without a current row (today, a day with late events) counted."""
    cached = closed_days(project=project, first=start, last=end)
    rows = [(d, v, n) for d, row in cached.items() for v, n in row.versions.items()]
    missing = _missing(start, end, cached)
    if missing:
        wanted = set(missing)
        rows += [
            r
            for r in versions_counted(project=project, start=missing[0], end=missing[-1])
            if as_date(r[0]) in wanted
        ]
    return rows


def os_breakdown(*, project: Project, start: dt.date, end: dt.date) -> list[tuple[str, int]]:
    """Distinct active installs per OS (the OS of their activity rows) in [start, end].

    When nothing is dated after `end`, the (install, OS) pairs of the closed days already in
    OsActivity are its rows with a last day from `start` on; only the other days (today, days
    with late events) are read from the daily activity. Otherwise everything is counted."""
    if not _seen_after(project, end):
        folded = folded_days(project=project, first=start, last=end)
        if folded:
            live = _missing(start, end, folded)
            # The pairs are unique already; a live day's pair counts only when no folded day
            # of the range has it (one probe of the unique key each, not a sort of the union).
            sql = "SELECT os FROM telemetry_osactivity WHERE project_id = %s AND last_day >= %s"
            params: list = [project.pk, db_date(start)]
            if live:
                marks = ", ".join(["%s"] * len(live))
                sql += (
                    " UNION ALL SELECT a.os FROM (SELECT DISTINCT install_id, os"
                    " FROM telemetry_dailyactivity"
                    f" WHERE project_id = %s AND day IN ({marks})) a"
                    " WHERE NOT EXISTS (SELECT 1 FROM telemetry_osactivity o"
                    " WHERE o.project_id = %s AND o.install_id = a.install_id AND o.os = a.os"
                    " AND o.last_day >= %s)"
                )
                params += [project.pk, *(db_date(d) for d in live), project.pk, db_date(start)]
            rows = _rows(
                f"SELECT os, COUNT(*) FROM ({sql}) x GROUP BY os ORDER BY 2 DESC, 1", params
            )
            return [(os or "unknown", n) for os, n in rows]
    rows = _rows(
        "SELECT os, COUNT(*) FROM (SELECT os, install_id FROM telemetry_dailyactivity"
        " WHERE project_id = %s AND day >= %s AND day <= %s GROUP BY 1, 2) x"
        " GROUP BY os ORDER BY 2 DESC, 1",
        [project.pk, db_date(start), db_date(end)],
    )
    return [(os or "unknown", n) for os, n in rows]


def _seen_after(project: Project, day: dt.date) -> bool:
    """Whether any install has an event dated after `day` (Install.last_seen, by its index)."""
    return bool(
        _rows(
            "SELECT 1 FROM telemetry_install WHERE project_id = %s AND last_seen >= %s LIMIT 1",
            [project.pk, db_datetime(day_start(day + dt.timedelta(days=1)))],
        )
    )


def folded_days(
    *, project: Project, first: dt.date, last: dt.date
) -> dict[dt.date, RollingActivity]:
    """Days of [first, last] whose activity is in OsActivity as it is now: their row's
    `day_events` still equals the day's events (a late event on the day makes it unfolded)."""
    rows = list(
        RollingActivity.objects.filter(project=project, day__gte=first, day__lte=last).only(
            "day", "day_events"
        )
    )
    if not rows:
        return {}
    events = daily_events(project=project, first=first, last=last)
    return {r.day: r for r in rows if events.get(r.day, 0) == r.day_events}


def overview(*, project: Project, start: dt.date, end: dt.date) -> dict:
    """Everything the overview page shows, with the previous period of the same length."""
    length = (end - start).days + 1
    prev_end = start - dt.timedelta(days=1)
    prev_start = prev_end - dt.timedelta(days=length - 1)
    current = rolling(project=project, day=end)
    previous = rolling(project=project, day=prev_end)
    daily = active_series(project=project, interval=DAY, start=start, end=end)
    prev_daily = active_series(project=project, interval=DAY, start=prev_start, end=prev_end)
    return {
        "start": start,
        "end": end,
        "previous_start": prev_start,
        "previous_end": prev_end,
        "current": current,
        "previous": previous,
        "daily": daily,
        "totals": {
            "new_installs": sum(p.new_installs for p in daily),
            "events": sum(p.events for p in daily),
        },
        "previous_totals": {
            "new_installs": sum(p.new_installs for p in prev_daily),
            "events": sum(p.events for p in prev_daily),
        },
    }


__all__ = ["DAY", "MONTH", "WEEK", "Period", "Rolling"]
