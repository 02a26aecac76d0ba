"""Calendar periods (UTC day, ISO week from Monday, month), their labels, range clamping, and the
per-backend SQL that buckets a date column into them.
"""

import datetime as dt
import re

from telemetry.analytics import db

DAY, WEEK, MONTH = "day", "week", "month"
INTERVALS = (DAY, WEEK, MONTH)
MAX_DAYS = 400  # a longer requested range is clamped to its last MAX_DAYS days
MAX_PERIODS = 366
# No telemetry is older than 1970; a range ending this early would also take the arithmetic on
# its days and its previous period (e.g. from 0001-01-01) outside the calendar.
EARLIEST_END = dt.date(1970, 1, 1) + dt.timedelta(days=MAX_DAYS)

_WEEK_LABEL = re.compile(r"^(\d{4})-W(\d{2})$")


class BadRequest(ValueError):
    """Input the caller must fix; `code` is the machine-readable error."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def today(now: dt.datetime) -> dt.date:
    return now.astimezone(dt.UTC).date()


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def period_start(day: dt.date, interval: str) -> dt.date:
    if interval == WEEK:
        return day - dt.timedelta(days=day.weekday())
    if interval == MONTH:
        return day.replace(day=1)
    return day


def next_period(start: dt.date, interval: str) -> dt.date:
    if interval == WEEK:
        return start + dt.timedelta(days=7)
    if interval == MONTH:
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start + dt.timedelta(days=1)


def period_end(start: dt.date, interval: str) -> dt.date:
    """The last day of the period that begins on `start`."""
    return next_period(start, interval) - dt.timedelta(days=1)


def periods(start: dt.date, end: dt.date, interval: str) -> list[dt.date]:
    """Start days of every period touching [start, end]."""
    out = []
    p = period_start(start, interval)
    while p <= end:
        out.append(p)
        p = next_period(p, interval)
    return out


def label(start: dt.date, interval: str) -> str:
    if interval == WEEK:
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if interval == MONTH:
        return f"{start:%Y-%m}"
    return start.isoformat()


def week_from_label(value: str) -> dt.date:
    m = _WEEK_LABEL.match(value)
    if not m:
        raise BadRequest("invalid_week", f"{value!r} is not an ISO week like 2026-W47")
    return dt.date.fromisocalendar(int(m[1]), int(m[2]), 1)


def parse_interval(value: str | None, *, default: str = DAY, allowed=INTERVALS) -> str:
    if value in (None, ""):
        return default
    if value not in allowed:
        raise BadRequest("invalid_interval", f"interval must be one of {', '.join(allowed)}")
    return value


def parse_day(value: str | None, name: str) -> dt.date | None:
    if value in (None, ""):
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequest("invalid_date", f"{name} must be a date like 2026-11-25") from None


def resolve_range(
    *, start: dt.date | None, end: dt.date | None, now: dt.datetime, default_days: int
) -> tuple[dt.date, dt.date]:
    """[start, end] inclusive; end defaults to today; a longer range keeps its last MAX_DAYS."""
    end = end or today(now)
    if end < EARLIEST_END:
        raise BadRequest("invalid_range", f"end must be on or after {EARLIEST_END}")
    start = start or end - dt.timedelta(days=default_days - 1)
    if start > end:
        raise BadRequest("invalid_range", "start must be on or before end")
    if (end - start).days + 1 > MAX_DAYS:
        start = end - dt.timedelta(days=MAX_DAYS - 1)
    return start, end


def as_date(value) -> dt.date:
    """A date from what the backend returned: date, datetime or 'YYYY-MM-DD…' text."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def is_postgres() -> bool:
    return db.vendor() == "postgresql"


def bucket_sql(column: str, interval: str) -> str:
    """SQL for the first day of `column`'s (a DATE) period, on the current backend."""
    if interval == DAY:
        return column
    if is_postgres():
        return f"date_trunc('{interval}', {column}::timestamp)::date"
    if interval == WEEK:
        weekday = f"((CAST(strftime('%w', {column}) AS INTEGER) + 6) % 7)"
        return f"date({column}, '-' || {weekday} || ' days')"
    return f"date({column}, 'start of month')"


def utc_date_sql(column: str) -> str:
    """SQL for the UTC calendar day of a timestamp column."""
    if is_postgres():
        return f"({column} AT TIME ZONE 'UTC')::date"
    return f"date({column})"


def db_date(value: dt.date):
    return db.connection().ops.adapt_datefield_value(value)


def db_datetime(value: dt.datetime):
    return db.connection().ops.adapt_datetimefield_value(value)
