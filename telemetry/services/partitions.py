"""Daily partitions of telemetry_event on PostgreSQL: create ahead, create on demand, drop.

Events are range-partitioned by their own `timestamp`, one partition per UTC day, named
telemetry_event_pYYYYMMDD. Daily, because retention is counted in whole UTC days: an expired day
is a whole partition, so the purge drops tables instead of deleting rows. SQLite keeps one table.
"""

import datetime as dt
import logging
import re

from django.db import DatabaseError, OperationalError, connection, transaction

log = logging.getLogger(__name__)

PARENT = "telemetry_event"
_NAME = re.compile(r"^telemetry_event_p(\d{8})$")
# Partition DDL waits at most this long for a lock: an analytics query holding the parent must
# not make every insert queue behind a waiting CREATE or DETACH.
LOCK_TIMEOUT = "2s"
DROP_LOCK_TIMEOUT = "100ms"
DAYS_AHEAD = 7


class PartitionUnavailable(Exception):
    """A partition could not be created now (lock timeout, database down); retry later."""


def partitioned() -> bool:
    """Whether this database keeps events in partitions (PostgreSQL after migration 0003)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass", [PARENT]
        )
        return cursor.fetchone() is not None


def partition_name(day: dt.date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def day_of(name: str) -> dt.date | None:
    match = _NAME.match(name)
    return dt.datetime.strptime(match.group(1), "%Y%m%d").date() if match else None


def existing(*, pending: bool = False) -> dict[dt.date, str]:
    """{day: partition name} attached to the parent; `pending` lists half-detached ones only."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass AND i.inhdetachpending = %s",
            [PARENT, pending],
        )
        names = [row[0] for row in cursor.fetchall()]
    return {day: name for name in names if (day := day_of(name)) is not None}


def create_sql(day: dt.date) -> str:
    start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {PARENT}"
        f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


def ensure(days: set[dt.date] | list[dt.date], *, cursor=None) -> list[dt.date]:
    """Create the missing partitions among `days`; returns the days created.

    Safe to race: a partition created meanwhile by another process counts as present.
    """
    wanted = set(days)
    if wanted & set(existing(pending=True)):
        finish_pending()  # a killed purge was dropping that day: finish, then start it anew
    missing = sorted(wanted - set(existing()))
    created = []
    for day in missing:
        try:
            with transaction.atomic(), connection.cursor() as c:
                c.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                c.execute(create_sql(day))
            created.append(day)
        except DatabaseError as exc:
            if day in existing():
                continue  # another process won the race
            raise PartitionUnavailable(f"partition for {day}: {type(exc).__name__}") from exc
    if created:
        log.info("created event partitions for %s", ", ".join(map(str, created)))
    return created


def ensure_range(*, start: dt.date, end: dt.date) -> list[dt.date]:
    """Partitions for every day in [start, end]."""
    return ensure([start + dt.timedelta(days=i) for i in range((end - start).days + 1)])


def ensure_ahead(*, now: dt.datetime) -> list[dt.date]:
    """Yesterday to DAYS_AHEAD days ahead: the days nearly every event lands on (beat, hourly)."""
    today = now.astimezone(dt.UTC).date()
    return ensure_range(
        start=today - dt.timedelta(days=1), end=today + dt.timedelta(days=DAYS_AHEAD)
    )


def projects_in(name: str) -> list[int]:
    """The projects with rows in one partition (distinct over its project index)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE p AS ("  # a loose index scan: one probe per project, not per row
            f" (SELECT project_id FROM {name} ORDER BY project_id LIMIT 1)"
            f" UNION ALL SELECT (SELECT project_id FROM {name} WHERE project_id > p.project_id"
            f" ORDER BY project_id LIMIT 1) FROM p WHERE p.project_id IS NOT NULL)"
            f" SELECT project_id FROM p WHERE project_id IS NOT NULL"
        )
        return [row[0] for row in cursor.fetchall()]


def drop(name: str) -> None:
    """Detach one partition and drop it, holding the parent for milliseconds at most.

    A plain DETACH needs a moment of exclusive lock on the parent: it waits at most
    DROP_LOCK_TIMEOUT (ingest queues behind it no longer), then falls back to DETACH …
    CONCURRENTLY, which never blocks inserts but costs two transactions. Killed half-way, that
    leaves the partition "detach pending", which `finish_pending` completes on the next run.
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.in_atomic_block:
                # Rows written earlier in a caller's transaction still owe their FK checks.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
            cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {name}")
            cursor.execute(f"DROP TABLE {name}")
        return
    except OperationalError:
        if connection.in_atomic_block:
            raise  # CONCURRENTLY cannot run inside a transaction
    with connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        try:
            cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {name} CONCURRENTLY")
            cursor.execute(f"DROP TABLE {name}")
        finally:
            cursor.execute("SET lock_timeout = 0")


def finish_pending() -> list[str]:
    """Finish what a killed purge left: detaches still pending, and partitions it detached but
    did not drop (tables named like a partition that belong to no parent)."""
    done = []
    if connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # as in drop()
    for name in existing(pending=True).values():
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {name} FINALIZE")
            cursor.execute(f"DROP TABLE {name}")
        done.append(name)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname ~ %s"
            " AND NOT c.relispartition",
            [_NAME.pattern],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f"DROP TABLE {name}")
            done.append(name)
    return done


def analyze_parent() -> None:
    """Refresh the parent's inherited statistics (autovacuum never analyses a partitioned
    parent); every partition is sampled, so this runs as its own daily job."""
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {PARENT}")


def event_days(cursor, table: str) -> list[dt.date]:
    """The UTC days that rows of `table` fall on (for moving a plain table into partitions)."""
    cursor.execute(f"SELECT DISTINCT (timestamp AT TIME ZONE 'UTC')::date FROM {table} ORDER BY 1")
    return [row[0] for row in cursor.fetchall()]
