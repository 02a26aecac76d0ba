"""The per-day error-group rollup (ErrorDay): each closed UTC day's error groups counted once from
the raw events, so the errors page groups only today's (and any stale day's) raw events.

Idempotent: `refresh_error_days` recounts only the days whose rows are missing or no longer match
the day's event count (late events); run it after bulk writes (seed_demo) and from the
one-minute `refresh_cohorts` beat job. Purges and install deletions drop rows themselves.
"""

import datetime as dt
from dataclasses import dataclass

from telemetry.analytics import active, errors
from telemetry.models import ErrorDay, Event, Project
from telemetry.services.maintenance import analyze
from telemetry.services.rolling import BULK_DAYS, closed_days


@dataclass
class ErrorDaysCounted:
    project: str
    days: int  # closed days (re)counted


def refresh_error_days(*, project: Project, now: dt.datetime) -> ErrorDaysCounted:
    """Recount the closed days of `project` (from its oldest activity day or 400 days ago, to
    yesterday) whose ErrorDay rows are missing or stale; drop rows outside those days."""
    with closed_days(project, now) as window:
        oldest, first, yesterday = window.oldest, window.first, window.yesterday
        rows = ErrorDay.objects.filter(project=project)
        if oldest is None or oldest > yesterday:
            rows.delete()
            return ErrorDaysCounted(project=project.slug, days=0)
        rows.exclude(day__gte=first, day__lte=yesterday).delete()
        # The day's event count is read before its events are grouped: should an event land in
        # between, the row claims fewer events than it counted and readers recount, never the
        # other way round.
        events = active.daily_events(project=project, first=first, last=yesterday)
        have: dict[dt.date, set[int]] = {}
        for day, n in rows.values_list("day", "day_events").distinct():
            have.setdefault(day, set()).add(n)
        days = [first + dt.timedelta(days=i) for i in range((yesterday - first).days + 1)]
        stale = [d for d in days if have.get(d) != {events.get(d, 0)}]
        if not stale:
            return ErrorDaysCounted(project=project.slug, days=0)
        rows.filter(day__in=stale).delete()
        counted = errors.counted_days(project=project, days=stale)
        new = []
        for day in stale:
            fingerprint = events.get(day, 0)
            groups = counted.get(day, [])
            if not groups:
                # A day without errors keeps one empty row: counted, nothing to scan again.
                new.append(ErrorDay(project=project, day=day, key="", day_events=fingerprint))
            new += [
                ErrorDay(
                    project=project,
                    day=day,
                    key=g.fingerprint,
                    kind=g.kind,
                    message=g.message,
                    stack_line=g.stack_line,
                    events=g.count,
                    first_seen=g.first_seen,
                    last_seen=g.last_seen,
                    installs=sorted(g.installs),
                    day_events=fingerprint,
                )
                for g in groups
            ]
        ErrorDay.objects.bulk_create(new, batch_size=500)
    if len(stale) > BULK_DAYS:
        analyze(["telemetry_errorday"])  # a first fill or a rebuild: plan on real rows
    return ErrorDaysCounted(project=project.slug, days=len(stale))


def error_days_of_install(*, project: Project, install_id: str) -> set[dt.date]:
    """The UTC days on which `install_id` has events: the ErrorDay rows that may name it.
    Read before its events are deleted."""
    return {
        d.date()
        for d in Event.objects.filter(project=project, install_id=install_id)
        .datetimes("timestamp", "day", tzinfo=dt.UTC)
        .order_by()
    }


def forget_days(*, project: Project, days: set[dt.date]) -> int:
    """Drop the ErrorDay rows of `days` (an install's deletion): those days are counted from the
    raw events until the next refresh, and no row keeps the deleted install's id."""
    deleted, _ = ErrorDay.objects.filter(project=project, day__in=sorted(days)).delete()
    return deleted


def refresh_stale(*, now: dt.datetime) -> list[ErrorDaysCounted]:
    """Refresh every project with a stale or missing closed day; report those that had one."""
    done = [refresh_error_days(project=p, now=now) for p in Project.objects.all()]
    return [r for r in done if r.days]
