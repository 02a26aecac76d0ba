"""The rollups every stored event adds to: Install, DailyActivity, PeriodActivity and DailyCount.

On PostgreSQL the store statement queues each stored event's rollup row and `fold_rollups`
folds the queue in (CONTRACTS A1: within a minute); SQLite writes them with the events
(`bump`). Kept apart from the pipeline so that the jobs which only fold (the purge, the
refreshes) start without the ingest schema and DRF (bench/RESULTS.md, session 6).
"""

import datetime as dt
import logging
import time
import zlib
from collections import defaultdict

from django.core.cache import cache
from django.db import IntegrityError, connection, transaction

from telemetry.models import DailyCount, PeriodActivity, Project
from telemetry.services import partitions

log = logging.getLogger(__name__)

# PostgreSQL only (migration 0009): what each stored event adds to the rollups, until folded.
ROLLUP_QUEUE = "telemetry_rollupqueue"
QUEUE_COLUMNS = "project_id, install_id, name, timestamp, app_version, os"

# Every rollup from the rows of `d` (the queue's rows with their UTC day). Events are summed per
# install and day first (`a`), and installs and weeks/months come from those sums: an install
# sends several events a day, so that is fewer rows to sort and group than the events (at 10
# events per install and day, 7.0-8.8 → 5.6-6.0 µs of PostgreSQL CPU a folded event:
# bench/fold.py, bench/RESULTS.md session 11). Days order as their events' times do, so the
# first (last) version of a day's sums is the first (last) of its events. Rollup rows are
# written in key order, so concurrent statements lock shared rows in one order and cannot
# deadlock.
ROLLUPS_SQL = f"""
a AS MATERIALIZED (
    SELECT project_id, install_id, day, count(*) AS events, min(timestamp) AS first_seen,
        max(timestamp) AS last_seen,
        coalesce((array_agg(app_version ORDER BY timestamp)
            FILTER (WHERE app_version <> ''))[1], '') AS first_version,
        coalesce((array_agg(app_version ORDER BY timestamp DESC)
            FILTER (WHERE app_version <> ''))[1], '') AS last_version,
        coalesce((array_agg(os ORDER BY timestamp DESC) FILTER (WHERE os <> ''))[1], '') AS os
    FROM d WHERE install_id <> '' GROUP BY project_id, install_id, day
), inst AS (
    INSERT INTO telemetry_install
        (project_id, install_id, first_seen, last_seen, first_version, last_version, os,
         event_count)
    SELECT project_id, install_id, min(first_seen), max(last_seen),
        coalesce((array_agg(first_version ORDER BY day)
            FILTER (WHERE first_version <> ''))[1], ''),
        coalesce((array_agg(last_version ORDER BY day DESC)
            FILTER (WHERE last_version <> ''))[1], ''),
        coalesce((array_agg(os ORDER BY day DESC) FILTER (WHERE os <> ''))[1], ''),
        sum(events)::bigint
    FROM a GROUP BY project_id, install_id ORDER BY project_id, install_id
    {{install_conflict}}
), act AS (
    INSERT INTO {{activity_table}} (project_id, install_id, day, events, app_version, os)
    SELECT project_id, install_id, day, events, last_version, os
    FROM a ORDER BY project_id, install_id, day
    {{activity_conflict}}
), per AS (
    INSERT INTO telemetry_periodactivity (project_id, install_id, period, start)
    SELECT project_id, install_id, period, start FROM (
        SELECT project_id, install_id, 'w' AS period,
            day - (EXTRACT(ISODOW FROM day)::int - 1) AS start FROM a
        UNION
        SELECT project_id, install_id, 'm', date_trunc('month', day)::date FROM a
    ) p ORDER BY project_id, period, start, install_id
    ON CONFLICT (project_id, period, start, install_id) DO NOTHING
), cnt AS (
    INSERT INTO telemetry_dailycount (project_id, day, name, shard, events)
    SELECT project_id, day, name, mod(abs(hashtext(install_id)), {DailyCount.SHARDS}), count(*)
    FROM d GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    {{count_conflict}}
)"""

# Take up to %s queued rows, oldest first (only committed ones are visible, so a statement that
# commits late is folded by a later run, never missed) and fold them into the rollups in one
# statement; the DELETE and the rollup writes commit together, so no row is counted twice.
# Rows of a project deleted since are dropped with it, and the statement names that project:
# events have no foreign key (migration 0014), so an event stored while its project was being
# deleted is still there, and the fold deletes it.
_FOLD_POSTGRES = f"""
WITH q AS (
    DELETE FROM {ROLLUP_QUEUE} WHERE id IN (
        SELECT id FROM {ROLLUP_QUEUE} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
    RETURNING {QUEUE_COLUMNS}
), d AS (
    SELECT q.*, (q.timestamp AT TIME ZONE 'UTC')::date AS day FROM q
    WHERE EXISTS (SELECT 1 FROM telemetry_project p WHERE p.id = q.project_id)
), {{rollups}}
SELECT count(*), (
    SELECT array_agg(DISTINCT project_id) FROM q
    WHERE NOT EXISTS (SELECT 1 FROM telemetry_project p WHERE p.id = q.project_id)
) FROM q
"""
FOLD_BATCH = 50_000
# One fold at a time: pg_advisory_xact_lock key ("tmfold" in ASCII).
_FOLD_LOCK = 0x746D666F6C64


def fold_rollups(*, wait: bool = True) -> int:
    """Fold queued rollup rows into Install, DailyActivity, PeriodActivity and DailyCount;
    returns how many events were folded. Idempotent and safe beside ingest and other folds.

    `wait=False` returns 0 at once when another fold is running (readers that only want fresh
    numbers); jobs, the purge and imports wait, so the queue is empty of what they had sent.
    SQLite writes rollups with the events, so there is nothing to fold there.
    """
    if connection.vendor != "postgresql":
        return 0
    folded = 0
    made_days = False
    while True:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                if wait:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_FOLD_LOCK])
                else:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_FOLD_LOCK])
                    if not cursor.fetchone()[0]:
                        return folded
                cursor.execute(_FOLD_POSTGRES_SQL, [FOLD_BATCH])
                n, gone = cursor.fetchone()
                if gone:
                    delete_orphans(cursor, gone)
        except IntegrityError as exc:
            # A day whose activity partition a purge dropped while its events' partition stayed
            # (another project's id-less events kept it): make the day, then fold again.
            if made_days or "no partition" not in str(exc):
                raise
            partitions.ensure(_queued_days())
            made_days = True
            continue
        folded += n
        if n < FOLD_BATCH:
            _record_fold()
            return folded


def delete_orphans(cursor, projects: list[int]) -> int:
    """Delete the events of projects that no longer exist (stored while they were deleted)."""
    cursor.execute(
        "DELETE FROM telemetry_event e WHERE e.project_id = ANY(%s) AND NOT EXISTS"
        " (SELECT 1 FROM telemetry_project p WHERE p.id = e.project_id)",
        [projects],
    )
    if cursor.rowcount:
        log.info("deleted %d events of %d deleted projects", cursor.rowcount, len(projects))
    return cursor.rowcount


# When a fold last emptied the queue (epoch seconds), in the shared cache: readers on a replica
# fold themselves only when no fold has for a while (analytics.db.fold_overdue).
LAST_FOLD_KEY = "rollups:last-fold"


def _record_fold() -> None:
    try:
        cache.set(LAST_FOLD_KEY, time.time(), timeout=None)
    except Exception as exc:  # a cache that does not answer must not fail the fold
        log.warning("last fold not recorded (%s)", type(exc).__name__)


def last_fold() -> float | None:
    """When a fold last emptied the queue (epoch seconds); None if none is on record or the
    cache does not answer."""
    try:
        return cache.get(LAST_FOLD_KEY)
    except Exception as exc:
        log.warning("last fold not read (%s)", type(exc).__name__)
        return None


def _queued_days() -> set[dt.date]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT (timestamp AT TIME ZONE 'UTC')::date FROM {ROLLUP_QUEUE}")
        return {day for (day,) in cursor.fetchall()}


def pending_rollups() -> int:
    """Queued events not folded into the rollups yet (0 on SQLite)."""
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {ROLLUP_QUEUE}")
        return cursor.fetchone()[0]


def _values_chunks(rows: list[tuple]):
    """Yield (VALUES source, params) pairs covering `rows`, in chunks under SQLite's variable
    limit (PostgreSQL writes rollups inside _STORE_POSTGRES instead)."""
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        placeholder = "(" + ",".join(["%s"] * len(chunk[0])) + ")"
        yield "VALUES " + ",".join([placeholder] * len(chunk)), [v for row in chunk for v in row]


INSTALL_CONFLICT = """
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
_INSTALL_UPSERT = (
    """
INSERT INTO telemetry_install
    (project_id, install_id, first_seen, last_seen, first_version, last_version, os, event_count)
{source}"""
    + INSTALL_CONFLICT
)

ACTIVITY_CONFLICT = """
ON CONFLICT (project_id, install_id, day) DO UPDATE SET
    events = telemetry_dailyactivity.events + excluded.events,
    app_version = CASE WHEN excluded.app_version <> '' THEN excluded.app_version
        ELSE telemetry_dailyactivity.app_version END,
    os = CASE WHEN excluded.os <> '' THEN excluded.os ELSE telemetry_dailyactivity.os END
"""
_ACTIVITY_UPSERT = (
    """
INSERT INTO telemetry_dailyactivity (project_id, install_id, day, events, app_version, os)
{source}"""
    + ACTIVITY_CONFLICT
)

_PERIOD_INSERT = """
INSERT INTO telemetry_periodactivity (project_id, install_id, period, start) {source}
ON CONFLICT (project_id, period, start, install_id) DO NOTHING
"""

COUNT_CONFLICT = """
ON CONFLICT (project_id, day, name, shard) DO UPDATE SET
    events = telemetry_dailycount.events + excluded.events
"""
_COUNT_UPSERT = (
    "INSERT INTO telemetry_dailycount (project_id, day, name, shard, events) {source}"
    + COUNT_CONFLICT
)


_FOLD_POSTGRES_SQL = _FOLD_POSTGRES.format(
    rollups=ROLLUPS_SQL.format(
        install_conflict=INSTALL_CONFLICT,
        activity_table=partitions.ACTIVITY,
        activity_conflict=ACTIVITY_CONFLICT,
        count_conflict=COUNT_CONFLICT,
    )
)


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


def _upsert(cursor, upserts: list[tuple[str, list[tuple]]]) -> None:
    """Run multi-row upserts given as (sql, rows), each row set sorted by its conflict key so
    concurrent writers lock rollup rows in one order (SQLite's rollup path)."""
    for sql, rows in upserts:
        if rows:
            for source, params in _values_chunks(sorted(rows)):
                cursor.execute(sql.format(source=source), params)


def bump(cursor, project: Project, events: list) -> None:
    """Add the events' rollups in the statement's transaction (SQLite's path)."""
    ops = connection.ops
    installs: dict[str, list] = {}
    activity: dict[tuple[str, dt.date], list] = {}
    counts: dict[tuple[dt.date, str, int], int] = defaultdict(int)
    for e in sorted(events, key=lambda e: e.timestamp):
        day = e.timestamp.date()
        counts[(day, e.name, zlib.crc32(e.install_id.encode()) % DailyCount.SHARDS)] += 1
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
            ),
            (
                _ACTIVITY_UPSERT,
                [
                    (project.pk, install_id, dbdate(day), n, version, os_name)
                    for (install_id, day), (n, version, os_name) in activity.items()
                ],
            ),
            (
                _PERIOD_INSERT,
                [(project.pk, i, kind, dbdate(start)) for i, kind, start in periods],
            ),
            (
                _COUNT_UPSERT,
                [
                    (project.pk, dbdate(day), name, shard, n)
                    for (day, name, shard), n in counts.items()
                ],
            ),
        ],
    )
