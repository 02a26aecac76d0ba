"""The closed-period rollups: RollingActivity (DAU, rolling WAU/MAU and installs per version of
each closed UTC day), OsActivity (each install and OS's last closed active day) and ClosedPeriod
(active installs, new installs and events of each closed day, ISO week and month), counted from
the activity rollups so the overview reads O(periods) rows and the month's active installs.

Idempotent: `refresh_rolling` recounts only the periods whose row is missing or no longer
matches its inputs (late events, a purge); run it after bulk writes (seed_demo) and from the
one-minute `refresh_cohorts` beat job. Readers check each row's fingerprint, so a stale row is
never served.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Case, Q, Value, When

from telemetry.analytics import active
from telemetry.analytics.periods import DAY, MONTH, WEEK, as_date, period_end, periods, today
from telemetry.models import ClosedPeriod, OsActivity, Project, RollingActivity
from telemetry.services.maintenance import analyze

# Days before today kept counted: the longest range a page or the API asks for (400 days).
MAX_DAYS = 400
# More days folded at once than a week of late events: a bulk write, analysed afterwards.
BULK_DAYS = 7


@dataclass
class RolledUp:
    project: str
    days: int  # RollingActivity rows (re)counted
    periods: int = 0  # ClosedPeriod rows (re)counted


def refresh_rolling(*, project: Project, now: dt.datetime) -> RolledUp:
    """Recount the stale or missing closed days and periods of `project`, from its oldest
    activity day (or 400 days ago) to yesterday; drop rows older than that (purged days)."""
    days = _refresh_days(project, now)
    return RolledUp(project=project.slug, days=days, periods=refresh_periods(project, now))


@dataclass
class ClosedDays:
    oldest: dt.date | None  # the project's oldest activity day; None when it has none
    first: dt.date | None  # the first day a refresh counts: `oldest` or MAX_DAYS ago
    yesterday: dt.date  # the last closed day


@contextmanager
def closed_days(project: Project, now: dt.datetime) -> Iterator[ClosedDays]:
    """The transaction a closed-period refresh runs in, with the days it counts.

    Outermost on PostgreSQL, it reads at one snapshot (REPEATABLE READ): the refresh's
    fingerprints and counts see the same events, so a row never claims events its counts did
    not see."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        oldest = active.raw_boundary(project=project)
        first = max(oldest, today(now) - dt.timedelta(days=MAX_DAYS)) if oldest else None
        yield ClosedDays(oldest=oldest, first=first, yesterday=today(now) - dt.timedelta(days=1))


def _refresh_days(project: Project, now: dt.datetime) -> int:
    with closed_days(project, now) as window:
        first, yesterday = window.first, window.yesterday
        old = RollingActivity.objects.filter(project=project)
        if first is not None:
            old = old.exclude(day__gte=first, day__lte=yesterday)
        old.delete()
        # Pairs last active before the oldest day kept describe purged activity.
        OsActivity.objects.filter(project=project, last_day__lt=first or today(now)).delete()
        if first is None or first > yesterday:
            return 0
        # Fingerprints before counts: should an event land in between, the row's fingerprint
        # is older than its counts and readers recount; never the other way round.
        wanted = active.window_fingerprints(project=project, first=first, last=yesterday)
        events = active.daily_events(project=project, first=first, last=yesterday)
        have = {
            day: (fp, n)
            for day, fp, n in RollingActivity.objects.filter(project=project).values_list(
                "day", "fingerprint", "day_events"
            )
        }
        stale = [d for d, fp in wanted.items() if have.get(d, ("", 0))[0] != fp]
        if not stale:
            return 0
        unfolded = [d for d in stale if d not in have or have[d][1] != events.get(d, 0)]
        _fold_os(project, unfolded)
        versions: dict[dt.date, dict[str, int]] = {d: {} for d in stale}
        for day, version, n in active.versions_counted(
            project=project, start=min(stale), end=max(stale)
        ):
            if as_date(day) in versions:
                versions[as_date(day)][version] = n
        rows = []
        for day in stale:
            counts = active.rolling_counted(project=project, day=day)
            rows.append(
                RollingActivity(
                    project=project,
                    day=day,
                    dau=counts.dau,
                    wau=counts.wau,
                    mau=counts.mau,
                    versions=versions[day],
                    fingerprint=wanted[day],
                    day_events=events.get(day, 0),
                )
            )
        RollingActivity.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["project", "day"],
            update_fields=["dau", "wau", "mau", "versions", "fingerprint", "day_events"],
        )
    if len(unfolded) > BULK_DAYS:
        # A first fill or a rebuild wrote a table's worth of rows: plan on them (STYLE 16).
        analyze(["telemetry_rollingactivity", "telemetry_osactivity"])
    return len(rows)


_KINDS = ((DAY, ClosedPeriod.DAY), (WEEK, ClosedPeriod.WEEK), (MONTH, ClosedPeriod.MONTH))
_INTERVAL = {kind: interval for interval, kind in _KINDS}


def refresh_periods(project: Project, now: dt.datetime) -> int:
    """Recount the closed days, weeks and months of `project` (from its oldest activity day or
    400 days ago, to yesterday) whose ClosedPeriod row is missing or stale; drop the others.
    Returns the rows (re)counted."""
    with closed_days(project, now) as window:
        oldest, first, yesterday = window.oldest, window.first, window.yesterday
        rows = ClosedPeriod.objects.filter(project=project)
        if oldest is None or oldest > yesterday:
            rows.delete()
            return 0
        # Fingerprints before counts, as in _refresh_days.
        wanted = active.period_fingerprints(project=project, oldest=oldest, last=yesterday)
        want: dict[tuple[str, dt.date], str] = {}
        for interval, kind in _KINDS:
            for start in periods(first, yesterday, interval):
                end = period_end(start, interval)
                if start >= first and end <= yesterday:
                    want[(kind, start)] = wanted[end]
        have = {(k, s): fp for k, s, fp in rows.values_list("period", "start", "fingerprint")}
        gone = [key for key in have if key not in want]
        for kind in {k for k, _ in gone}:
            rows.filter(period=kind, start__in=[s for k, s in gone if k == kind]).delete()
        stale = sorted(key for key, fp in want.items() if have.get(key) != fp)
        if not stale:
            return 0
        lo = min(s for _, s in stale)
        hi = max(period_end(s, _INTERVAL[k]) for k, s in stale)
        new_by_day = active.new_counts(project=project, start=lo, end=hi)
        events_by_day = active.daily_events(project=project, first=lo, last=hi)
        counted = []
        for interval, kind in _KINDS:
            starts = [s for k, s in stale if k == kind]
            if not starts:
                continue
            end = period_end(max(starts), interval)
            installs = active.active_counted(
                project=project, start=min(starts), end=end, interval=interval
            )
            for start in starts:
                days = range((period_end(start, interval) - start).days + 1)
                in_period = [start + dt.timedelta(days=i) for i in days]
                counted.append(
                    ClosedPeriod(
                        project=project,
                        period=kind,
                        start=start,
                        active_installs=installs.get(start, 0),
                        new_installs=sum(new_by_day.get(d, 0) for d in in_period),
                        events=sum(events_by_day.get(d, 0) for d in in_period),
                        fingerprint=want[(kind, start)],
                    )
                )
        ClosedPeriod.objects.bulk_create(
            counted,
            update_conflicts=True,
            unique_fields=["project", "period", "start"],
            update_fields=["active_installs", "new_installs", "events", "fingerprint"],
            batch_size=1000,
        )
    if len(counted) > BULK_DAYS:
        analyze(["telemetry_closedperiod"])
    return len(counted)


def carry_periods(*, project: Project, oldest_before: dt.date | None) -> int:
    """After a purge moved the oldest activity day on from `oldest_before`: give the current
    ClosedPeriod rows that begin on or after the new oldest day the new fingerprint, instead of
    leaving every one of them to be counted by readers until the next refresh. Returns the rows
    carried over.

    Their counts read nothing a purge removes: it takes activity, period rows and installs last
    seen before its cutoff, while such a period counts installs active in it, installs first
    seen in it (so last seen there or later) and its days' events from DailyCount, which the
    purge keeps. Only the fingerprint, which names the oldest day, is out of date. (At 10M
    events, readers counting every period took the overview page to ~580 ms until the
    one-minute job ran: bench/RESULTS.md.) Both fingerprints come from one read of the daily
    counts, and a row is changed only where it still holds the old one: a late event or a
    refresh in between leaves it to the refresh, as before."""
    oldest = active.raw_boundary(project=project)
    if oldest_before is None or oldest is None or oldest <= oldest_before:
        return 0
    rows = list(
        ClosedPeriod.objects.filter(project=project, start__gte=oldest).values_list(
            "pk", "period", "start", "fingerprint"
        )
    )
    if not rows:
        return 0
    ends = {pk: period_end(start, _INTERVAL[kind]) for pk, kind, start, _ in rows}
    last = max(ends.values())
    per_day = active.daily_events(project=project, first=oldest_before, last=last)
    before = active.fingerprints_from(per_day, oldest=oldest_before, last=last)
    after = active.fingerprints_from(per_day, oldest=oldest, last=last)
    carried = {pk: (fp, after[ends[pk]]) for pk, _, _, fp in rows if before[ends[pk]] == fp}
    if not carried:
        return 0
    carried_over = 0
    items = list(carried.items())
    for i in range(0, len(items), CARRY_CHUNK):
        chunk = items[i : i + CARRY_CHUNK]
        # Each row only if it still holds the fingerprint checked above.
        still = Q()
        for pk, (old, _) in chunk:
            still |= Q(pk=pk, fingerprint=old)
        carried_over += ClosedPeriod.objects.filter(still).update(
            fingerprint=Case(*(When(pk=pk, then=Value(new)) for pk, (_, new) in chunk))
        )
    return carried_over


# Rows per UPDATE: its WHERE and CASE grow with each row, and SQLite parses an expression at
# most 1,000 levels deep.
CARRY_CHUNK = 200


def _fold_os(project: Project, days: list[dt.date]) -> None:
    """Raise each (install, OS) pair's last day to the latest of `days` it was active on."""
    if not days:
        return
    latest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    marks = ", ".join(["%s"] * len(days))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO telemetry_osactivity (project_id, install_id, os, last_day)"
            " SELECT project_id, install_id, os, MAX(day) FROM telemetry_dailyactivity"
            f" WHERE project_id = %s AND day IN ({marks}) GROUP BY project_id, install_id, os"
            " ON CONFLICT (project_id, install_id, os) DO UPDATE SET last_day ="
            f" {latest}(telemetry_osactivity.last_day, excluded.last_day)",
            [project.pk, *(connection.ops.adapt_datefield_value(d) for d in days)],
        )


def invalidate(*, project: Project) -> None:
    """Forget the project's counted days and periods (after deleting an install's rows):
    readers count until the next refresh."""
    RollingActivity.objects.filter(project=project).delete()
    ClosedPeriod.objects.filter(project=project).delete()


def forget_install(*, project: Project, install_id: str) -> None:
    """Drop one install's (install, OS) pairs and the counted days (an install's deletion)."""
    OsActivity.objects.filter(project=project, install_id=install_id).delete()
    invalidate(project=project)


def refresh_stale(*, now: dt.datetime) -> list[RolledUp]:
    """Refresh every project with a stale or missing closed day; report those that had one."""
    done = [refresh_rolling(project=p, now=now) for p in Project.objects.all()]
    return [r for r in done if r.days or r.periods]
