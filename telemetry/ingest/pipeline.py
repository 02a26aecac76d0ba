"""The one ingest pipeline: dedupe → rate limit → hash IP → store events and rollups.

Front doors validate their own wire format into IncomingEvents and call `ingest`; this module is
the only writer of events and rollups. Order matters (CONTRACTS A2): a duplicate consumes no
quota, a refused event stores nothing, and the rollups move in the same transaction as the rows.
"""

import datetime as dt
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from telemetry.ingest import limits
from telemetry.ingest.privacy import hash_ip, ip_rate_key, redact
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import PeriodActivity, Project

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
LIMITED = "limited"


class ServiceUnavailable(Exception):
    """A backing service (database or cache) failed; answer 503 with Retry-After, store nothing."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} unavailable")
        self.service = service
        self.retry_after = settings.TELEMETRY_RETRY_AFTER_SECONDS


@dataclass(slots=True)
class Outcome:
    status: str  # ACCEPTED, DUPLICATE or LIMITED
    limited_by: str = ""  # "install" or "ip" (or "key" when limited per key)
    retry_after: int = 0


@dataclass(slots=True)
class IngestResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def accepted(self) -> int:
        return self.count(ACCEPTED)

    @property
    def duplicates(self) -> int:
        return self.count(DUPLICATE)

    @property
    def retry_after(self) -> int:
        return max((o.retry_after for o in self.outcomes if o.status == LIMITED), default=0)


def ingest(
    *,
    project: Project,
    events: list[IncomingEvent],
    client_ip: str,
    now: dt.datetime | None = None,
    limit_key: str | None = None,
) -> IngestResult:
    """Run validated events through dedupe, limits and storage; one Outcome per event, in order.

    `limit_key` replaces the client IP as the second rate-limit bucket, for senders that are one
    server behind many users (an API gateway posting with one key).

    The database is the judge of duplicates: events that carry an event_id are inserted first,
    inside the transaction, so a copy in flight elsewhere makes this insert wait and then
    conflict. Only what survived that is charged to the rate limits; rows the limits refuse are
    deleted before commit, so nobody ever sees them.
    """
    now = now or timezone.now()
    outcomes: list[Outcome | None] = [None] * len(events)
    try:
        ip_hash = hash_ip(ip=client_ip, project_id=project.pk, now=now)
    except DatabaseError as exc:
        raise _unavailable("database", exc) from exc
    rows = _rows(project, events, ip_hash, now)
    ip_hash = ip_rate_key(ip=client_ip, project_id=project.pk)  # the limiter's: no midnight reset
    if len(events) == 1 and not events[0].event_id and connection.vendor == "postgresql":
        return _ingest_one_without_id(project, events, rows[0], ip_hash, limit_key)
    fresh: list[int] = []
    allowed: list[int] = []
    hits: dict[int, list[str]] = {}
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            claimed = _claim_event_ids(cursor, events, rows, outcomes)
            fresh = [i for i, outcome in enumerate(outcomes) if outcome is None]
            allowed, hits = _apply_limits(project, events, fresh, outcomes, ip_hash, limit_key)
            keep = set(allowed)
            refused = [claimed[i] for i in fresh if i in claimed and i not in keep]
            if refused:
                cursor.execute(
                    "DELETE FROM telemetry_event WHERE id IN ("
                    + ",".join(["%s"] * len(refused))
                    + ")",
                    refused,
                )
            rest = [rows[i] for i in allowed if i not in claimed]
            if rest:
                _insert_rows(cursor, rest)
            if allowed:
                _bump_rollups(cursor, project, [events[i] for i in allowed])
    except DatabaseError as exc:
        limits.refund(_sum_hits(hits, fresh))
        raise _unavailable("database", exc) from exc
    for i in allowed:
        outcomes[i] = Outcome(ACCEPTED)
    # Counters count stored events only: give back the hits of refused events.
    limits.refund(_sum_hits(hits, [i for i in fresh if outcomes[i].status != ACCEPTED]))
    return IngestResult(outcomes=outcomes)  # type: ignore[arg-type]


def _ingest_one_without_id(
    project: Project, events: list[IncomingEvent], row: tuple, ip_hash: str, limit_key: str | None
) -> IngestResult:
    """The hot path for one event with no event_id on PostgreSQL: nothing to dedupe, so charge
    the limits, then store the event and its rollups in a single statement."""
    outcomes: list[Outcome | None] = [None]
    allowed, hits = _apply_limits(project, events, [0], outcomes, ip_hash, limit_key)
    if allowed:
        try:
            _store_one_postgres(row, events[0].timestamp.date())
        except DatabaseError as exc:
            limits.refund(_sum_hits(hits, [0]))
            raise _unavailable("database", exc) from exc
        outcomes[0] = Outcome(ACCEPTED)
    else:
        limits.refund(_sum_hits(hits, [0]))
    return IngestResult(outcomes=outcomes)  # type: ignore[arg-type]


def _unavailable(service: str, exc: Exception) -> ServiceUnavailable:
    log.warning("ingest: %s unavailable (%s)", service, type(exc).__name__)
    return ServiceUnavailable(service)


def _sum_hits(hits: dict[int, list[str]], indexes: list[int]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for i in indexes:
        for key in hits.get(i, ()):
            total[key] += 1
    return total


def _apply_limits(
    project: Project,
    events: list[IncomingEvent],
    fresh: list[int],
    outcomes: list[Outcome | None],
    ip_hash: str,
    limit_key: str | None,
) -> tuple[list[int], dict[int, list[str]]]:
    """Charge every fresh event to its install counter and to the client counter, at once.

    The install limit is applied first, then the client (IP or key) limit to what passed. Returns
    the indexes allowed and, per charged event, the counter keys it was charged to (for refunds).
    """
    if not fresh:
        return [], {}
    by_install: dict[str, list[int]] = defaultdict(list)
    for i in fresh:
        by_install[events[i].install_id].append(i)
    installs = [k for k in by_install if k]
    second = "key" if limit_key else "ip"
    charges = [
        limits.Charge(f"tm:{project.pk}:install", k, project.install_rate, len(by_install[k]))
        for k in installs
    ]
    charges.append(
        limits.Charge(
            f"tm:{project.pk}:{second}", limit_key or ip_hash, project.ip_rate, len(fresh)
        )
    )
    try:
        *install_usages, client = limits.charge(charges)
    except limits.LimiterUnavailable as exc:
        if settings.RATELIMIT_FAIL_OPEN:
            log.warning("ingest: rate-limit cache unavailable (%s), failing open", exc)
            return list(fresh), {}
        raise _unavailable("cache", exc) from exc
    hits = {i: [client.key] for i in fresh}
    passed = list(by_install.get("", []))  # events with no install id face the client limit only
    for install_id, usage in zip(installs, install_usages, strict=True):
        idx = by_install[install_id]
        ok = usage.allowed(len(idx))
        passed.extend(idx[:ok])
        for i in idx:
            hits[i].append(usage.key)
        for i in idx[ok:]:
            outcomes[i] = Outcome(LIMITED, "install", usage.retry_after)
    passed.sort()
    # Hits of install-refused events are refunded; until then they may only make this stricter.
    ok = max(0, min(len(passed), client.limit - (client.count - len(fresh))))
    for i in passed[ok:]:
        outcomes[i] = Outcome(LIMITED, second, client.retry_after)
    return passed[:ok], hits


def _rows(project: Project, events: list[IncomingEvent], ip_hash: str, now: dt.datetime) -> list:
    """One telemetry_event row (column order of _EVENT_INSERT) per event."""
    ops = connection.ops
    received = ops.adapt_datetimefield_value(now)
    return [
        (
            project.pk,
            e.event_id,
            e.install_id,
            e.name,
            ops.adapt_datetimefield_value(e.timestamp),
            received,
            e.session_id,
            e.app_version,
            e.os,
            redact(e.properties) if project.redact_pii else e.properties,
            ip_hash,
        )
        for e in events
    ]


def _claim_event_ids(
    cursor, events: list[IncomingEvent], rows: list, outcomes: list[Outcome | None]
) -> dict[int, int]:
    """Insert the events that carry an event_id; mark the rest of their copies DUPLICATE.

    Returns {event index: row id} for the rows inserted. A repeat inside the batch is a duplicate
    of its first occurrence; one stored before (or by a concurrent request) conflicts.
    """
    first: dict[str, int] = {}
    for i, e in enumerate(events):
        if e.event_id:
            if e.event_id in first:
                outcomes[i] = Outcome(DUPLICATE)
            else:
                first[e.event_id] = i
    if not first:
        return {}
    # Sorted by event_id so concurrent batches take unique-index locks in one order (no deadlock).
    order = sorted(first.values(), key=lambda i: events[i].event_id)
    stored: dict[str, int] = {}
    for source, params in _row_chunks([rows[i] for i in order], _EVENT_TYPES):
        cursor.execute(_EVENT_INSERT.format(source=source) + " RETURNING event_id, id", params)
        stored.update(cursor.fetchall())
    claimed = {}
    for event_id, i in first.items():
        if event_id in stored:
            claimed[i] = stored[event_id]
        else:
            outcomes[i] = Outcome(DUPLICATE)
    return claimed


def _insert_rows(cursor, rows: list) -> None:
    for source, params in _row_chunks(rows, _EVENT_TYPES):
        cursor.execute(_EVENT_INSERT.format(source=source), params)


_EVENT_INSERT = """
INSERT INTO telemetry_event (project_id, event_id, install_id, name, timestamp, received_at,
    session_id, app_version, os, properties, ip_hash)
{source}
ON CONFLICT (project_id, event_id) WHERE event_id IS NOT NULL DO NOTHING
"""


def _store_one_postgres(row: tuple, day: dt.date) -> bool:
    """One event and its three rollups in a single statement: one round trip, atomic.

    The rollups select from the inserted row, so an insert that conflicts bumps nothing.
    """
    sql = (
        "WITH ev AS ("
        + _EVENT_INSERT.format(source="VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s)")
        + " RETURNING project_id, install_id, name, timestamp, app_version, os),"
        + " inst AS ("
        + _INSTALL_UPSERT.format(
            source="SELECT project_id, install_id, timestamp, timestamp, app_version, app_version,"
            " os, 1 FROM ev WHERE install_id <> ''"
        )
        + "), act AS ("
        + _ACTIVITY_UPSERT.format(
            source="SELECT project_id, install_id, %s::date, 1, app_version, os FROM ev"
            " WHERE install_id <> ''"
        )
        + "), cnt AS ("
        + _COUNT_UPSERT.format(source="SELECT project_id, %s::date, name, 1 FROM ev")
        + "), per AS ("
        + _PERIOD_INSERT.format(
            source="SELECT project_id, install_id, 'w', %s::date FROM ev WHERE install_id <> ''"
            " UNION ALL SELECT project_id, install_id, 'm', %s::date FROM ev"
            " WHERE install_id <> ''"
        )
        + ") SELECT count(*) FROM ev"
    )
    with connection.cursor() as cursor:
        params = list(row)
        params[9] = _dumps(params[9])
        cursor.execute(sql, [*params, day, day, week_start(day), day.replace(day=1)])
        return cursor.fetchone()[0] == 1


# PostgreSQL column types, for batches sent as one array per column (see _row_chunks).
_EVENT_TYPES = [
    "bigint",
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "text",
    "text",
    "text",
    "jsonb",
    "text",
]
_INSTALL_TYPES = ["bigint", "text", "timestamptz", "timestamptz", "text", "text", "text", "bigint"]
_ACTIVITY_TYPES = ["bigint", "text", "date", "int", "text", "text"]
_PERIOD_TYPES = ["bigint", "text", "text", "date"]
_COUNT_TYPES = ["bigint", "date", "text", "bigint"]


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), default=_iso)


def _iso(value):
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _row_chunks(rows: list[tuple], pg_types: list[str]):
    """Yield (source, params) pairs covering `rows` for an INSERT's row source.

    PostgreSQL gets the whole batch as one JSON document read by jsonb_to_recordset: measured
    several times cheaper than thousands of `%s` (or arrays) for the driver to adapt.
    SQLite gets multi-row VALUES in chunks under its variable limit.
    """
    if connection.vendor == "postgresql":
        columns = ",".join(f"c{i} {t}" for i, t in enumerate(pg_types))
        names = ",".join(f"c{i}" for i in range(len(pg_types)))
        keys = [f"c{i}" for i in range(len(pg_types))]
        document = _dumps([dict(zip(keys, row, strict=True)) for row in rows])
        yield f"SELECT {names} FROM jsonb_to_recordset(%s::jsonb) AS x({columns})", [document]
        return
    json_columns = [i for i, t in enumerate(pg_types) if t == "jsonb"]
    placeholder = "(" + ",".join(["%s"] * len(pg_types)) + ")"
    for start in range(0, len(rows), 500):
        params = []
        for row in rows[start : start + 500]:
            row = list(row)
            for i in json_columns:
                row[i] = _dumps(row[i])
            params.extend(row)
        yield "VALUES " + ",".join([placeholder] * (len(params) // len(pg_types))), params


_INSTALL_UPSERT = """
INSERT INTO telemetry_install
    (project_id, install_id, first_seen, last_seen, first_version, last_version, os, event_count)
{source}
ON CONFLICT (project_id, install_id) DO UPDATE SET
    first_seen = CASE WHEN excluded.first_seen < telemetry_install.first_seen
        THEN excluded.first_seen ELSE telemetry_install.first_seen END,
    first_version = CASE WHEN excluded.first_seen < telemetry_install.first_seen
        AND excluded.first_version <> '' THEN excluded.first_version
        ELSE telemetry_install.first_version END,
    last_seen = CASE WHEN excluded.last_seen > telemetry_install.last_seen
        THEN excluded.last_seen ELSE telemetry_install.last_seen END,
    last_version = CASE WHEN excluded.last_seen >= telemetry_install.last_seen
        AND excluded.last_version <> '' THEN excluded.last_version
        ELSE telemetry_install.last_version END,
    os = CASE WHEN excluded.last_seen >= telemetry_install.last_seen AND excluded.os <> ''
        THEN excluded.os ELSE telemetry_install.os END,
    event_count = telemetry_install.event_count + excluded.event_count
"""

_ACTIVITY_UPSERT = """
INSERT INTO telemetry_dailyactivity (project_id, install_id, day, events, app_version, os)
{source}
ON CONFLICT (project_id, install_id, day) DO UPDATE SET
    events = telemetry_dailyactivity.events + excluded.events,
    app_version = CASE WHEN excluded.app_version <> '' THEN excluded.app_version
        ELSE telemetry_dailyactivity.app_version END,
    os = CASE WHEN excluded.os <> '' THEN excluded.os ELSE telemetry_dailyactivity.os END
"""

_PERIOD_INSERT = """
INSERT INTO telemetry_periodactivity (project_id, install_id, period, start) {source}
ON CONFLICT (project_id, period, start, install_id) DO NOTHING
"""

_COUNT_UPSERT = """
INSERT INTO telemetry_dailycount (project_id, day, name, events) {source}
ON CONFLICT (project_id, day, name) DO UPDATE SET
    events = telemetry_dailycount.events + excluded.events
"""


def week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def period_rows_sql(vendor: str) -> str:
    """SELECT of every (project, install, 'w'|'m', start) implied by telemetry_dailyactivity,
    for rebuilding PeriodActivity from the daily rows (migration backfill, demo data)."""
    if vendor == "postgresql":
        week = "a.day - (EXTRACT(ISODOW FROM a.day)::int - 1)"
        month = "date_trunc('month', a.day)::date"
    else:
        week = "date(a.day, '-' || ((CAST(strftime('%w', a.day) AS INTEGER) + 6) % 7) || ' days')"
        month = "date(a.day, 'start of month')"
    return (
        f"SELECT DISTINCT a.project_id, a.install_id, 'w', {week} FROM telemetry_dailyactivity a"
        " WHERE a.project_id = %s"
        f" UNION SELECT DISTINCT a.project_id, a.install_id, 'm', {month}"
        " FROM telemetry_dailyactivity a WHERE a.project_id = %s"
    )


def rebuild_period_activity(*, project: Project) -> None:
    """Derive the project's PeriodActivity rows from its DailyActivity rows (idempotent)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _PERIOD_INSERT.format(source=period_rows_sql(connection.vendor) + " AND TRUE"),
            [project.pk, project.pk],
        )


def _upsert(cursor, upserts: list[tuple[str, list[tuple], list[str]]]) -> None:
    """Run multi-row upserts given as (sql, rows, PostgreSQL column types).

    Rows are unique by conflict key (PostgreSQL insists) and sorted, so concurrent batches lock
    rollup rows in one order and cannot deadlock. PostgreSQL gets them all as one statement
    (data-modifying CTEs), one round trip; SQLite runs them in turn.
    """
    statements = []
    for sql, rows, pg_types in upserts:
        if rows:
            for source, params in _row_chunks(sorted(rows), pg_types):
                statements.append((sql.format(source=source), params))
    if connection.vendor == "postgresql" and len(statements) > 1:
        *first, (last_sql, last_params) = statements
        ctes = ", ".join(f"u{i} AS ({sql})" for i, (sql, _) in enumerate(first))
        params = [p for _, ps in first for p in ps] + list(last_params)
        statements = [(f"WITH {ctes} {last_sql}", params)]
    for sql, params in statements:
        cursor.execute(sql, params)


def _bump_rollups(cursor, project: Project, events: list[IncomingEvent]) -> None:
    ops = connection.ops
    installs: dict[str, list] = {}
    activity: dict[tuple[str, dt.date], list] = {}
    counts: dict[tuple[dt.date, str], int] = defaultdict(int)
    for e in sorted(events, key=lambda e: e.timestamp):
        day = e.timestamp.date()
        counts[(day, e.name)] += 1
        if not e.install_id:
            continue
        row = installs.get(e.install_id)
        if row is None:
            installs[e.install_id] = [
                e.timestamp,
                e.timestamp,
                e.app_version,
                e.app_version,
                e.os,
                1,
            ]
        else:
            row[1] = e.timestamp
            row[3] = e.app_version or row[3]
            row[4] = e.os or row[4]
            row[5] += 1
            if not row[2]:
                row[2] = e.app_version
        act = activity.get((e.install_id, day))
        if act is None:
            activity[(e.install_id, day)] = [1, e.app_version, e.os]
        else:
            act[0] += 1
            act[1] = e.app_version or act[1]
            act[2] = e.os or act[2]
    periods = set()
    for install_id, day in activity:
        periods.add((install_id, PeriodActivity.WEEK, week_start(day)))
        periods.add((install_id, PeriodActivity.MONTH, day.replace(day=1)))
    dbdate, dbtime = ops.adapt_datefield_value, ops.adapt_datetimefield_value
    _upsert(
        cursor,
        [
            (
                _INSTALL_UPSERT,
                [
                    (project.pk, install_id, dbtime(first), dbtime(last), v1, v2, os_name, n)
                    for install_id, (first, last, v1, v2, os_name, n) in installs.items()
                ],
                _INSTALL_TYPES,
            ),
            (
                _ACTIVITY_UPSERT,
                [
                    (project.pk, install_id, dbdate(day), n, version, os_name)
                    for (install_id, day), (n, version, os_name) in activity.items()
                ],
                _ACTIVITY_TYPES,
            ),
            (
                _PERIOD_INSERT,
                [(project.pk, i, kind, dbdate(start)) for i, kind, start in periods],
                _PERIOD_TYPES,
            ),
            (
                _COUNT_UPSERT,
                [(project.pk, dbdate(day), name, n) for (day, name), n in counts.items()],
                _COUNT_TYPES,
            ),
        ],
    )
