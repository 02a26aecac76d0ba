"""Daily partitions on PostgreSQL: create ahead, create on demand, drop.

Events are range-partitioned by their own `timestamp` and daily activity by its `day`, one
partition per UTC day, named <table>_pYYYYMMDD. Daily, because retention is counted in whole UTC
days: an expired day is a whole partition, so the purge drops tables instead of deleting rows.
SQLite keeps plain tables.
"""

import datetime as dt
import logging
import re
import time

from django.db import DatabaseError, OperationalError, connection, transaction

log = logging.getLogger(__name__)

PARENT = "telemetry_event"
ACTIVITY = "telemetry_dailyactivity"
# Each partitioned table and whether its key is a timestamp (else a date).
PARENTS = {PARENT: True, ACTIVITY: False}
_NAME = re.compile(r"^(telemetry_event|telemetry_dailyactivity)_p(\d{8})$")
# Partition DDL waits at most this long for a lock: an analytics query holding the parent must
# not make every insert queue behind a waiting CREATE or DETACH.
LOCK_TIMEOUT = "2s"
DROP_LOCK_TIMEOUT = "100ms"
DAYS_AHEAD = 7
# A plain DETACH that missed its lock budget is tried again after a pause before falling back:
# under live ingest the budget is usually missed behind one slow commit, and the fallback,
# DETACH … CONCURRENTLY, waits for every transaction that can see the partition, twice.
DETACH_ATTEMPTS = 3
DETACH_RETRY_PAUSE = 0.05
# Detached tables dropped per transaction. A commit removes the files of the tables it dropped,
# and ingest's commits wait behind that filesystem work: one table at a time makes many small
# pauses instead of a few long ones (ingest p99 during a 10M purge 2.4-3.2x its p99 without at
# 64 a transaction, 1.8-2.2x at one, the purge's wall time the same; bench/RESULTS.md, session 11).
DROP_TABLES_PER_TRANSACTION = 1
# Columns ANALYZE skips (statistics target 0), set on each new partition too: a partition made
# by PARTITION OF or LIKE does not inherit its parent's targets. Every filter on `properties` is
# on one of its keys, an expression the planner estimates without them, and gathering them
# (detoasting and comparing whole documents) was half of an event partition's ANALYZE.
NO_STATISTICS = {PARENT: ("properties",), ACTIVITY: ()}


class PartitionUnavailable(Exception):
    """A partition could not be created now (lock timeout, database down); retry later."""


def partitioned(parent: str = PARENT) -> bool:
    """Whether this database keeps `parent` in partitions (PostgreSQL, migrations 0003/0008)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [parent]
        )
        return cursor.fetchone() is not None


def partition_name(day: dt.date, parent: str = PARENT) -> str:
    return f"{parent}_p{day:%Y%m%d}"


def day_of(name: str) -> dt.date | None:
    match = _NAME.match(name)
    return dt.datetime.strptime(match.group(2), "%Y%m%d").date() if match else None


def parent_of(name: str) -> str:
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a partition name")
    return match.group(1)


def existing(*, pending: bool = False, parent: str = PARENT) -> dict[dt.date, str]:
    """{day: partition name} attached to `parent`; `pending` lists half-detached ones only."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass AND i.inhdetachpending = %s",
            [parent, pending],
        )
        names = [row[0] for row in cursor.fetchall()]
    return {day: name for name in names if (day := day_of(name)) is not None}


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the UTC day: an event partition's bounds."""
    start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def create_sql(day: dt.date, parent: str = PARENT) -> str:
    if PARENTS[parent]:
        bounds = tuple(bound.isoformat() for bound in day_bounds(day))
    else:
        bounds = (day.isoformat(), (day + dt.timedelta(days=1)).isoformat())
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(day, parent)} PARTITION OF {parent}"
        f" FOR VALUES FROM ('{bounds[0]}') TO ('{bounds[1]}')"
    )


def create(cursor, day: dt.date, parent: str = PARENT) -> None:
    """Create `day`'s partition of `parent` if it is missing, statistics targets included."""
    cursor.execute(create_sql(day, parent))
    skip_statistics(cursor, partition_name(day, parent), parent)


def skip_statistics(cursor, table: str, parent: str = PARENT) -> None:
    """Give `table`, a partition (or one to be attached) of `parent`, the NO_STATISTICS targets."""
    if skipped := NO_STATISTICS.get(parent):
        columns = ", ".join(f"ALTER COLUMN {c} SET STATISTICS 0" for c in skipped)
        cursor.execute(f"ALTER TABLE {table} {columns}")


def ensure(days: set[dt.date] | list[dt.date]) -> list[dt.date]:
    """Create the missing partitions among `days`, in every partitioned table; returns the days
    for which some partition was created. Safe to race: one created meanwhile counts as present.
    """
    wanted = set(days)
    created: set[dt.date] = set()
    for parent in PARENTS:
        if not partitioned(parent):
            continue
        if wanted & set(existing(pending=True, parent=parent)):
            finish_pending()  # a killed purge was dropping that day: finish, then start anew
        for day in sorted(wanted - set(existing(parent=parent))):
            try:
                with transaction.atomic(), connection.cursor() as c:
                    c.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    create(c, day, parent)
                created.add(day)
            except DatabaseError as exc:
                if day in existing(parent=parent):
                    continue  # another process won the race
                raise PartitionUnavailable(f"{parent} for {day}: {type(exc).__name__}") from exc
    if created:
        log.info("created partitions for %s", ", ".join(map(str, sorted(created))))
    return sorted(created)


def ensure_range(*, start: dt.date, end: dt.date) -> list[dt.date]:
    """Partitions for every day in [start, end]."""
    return ensure([start + dt.timedelta(days=i) for i in range((end - start).days + 1)])


def ensure_ahead(*, now: dt.datetime) -> list[dt.date]:
    """Yesterday to DAYS_AHEAD days ahead: the days nearly every event lands on (beat, hourly)."""
    today = now.astimezone(dt.UTC).date()
    return ensure_range(
        start=today - dt.timedelta(days=1), end=today + dt.timedelta(days=DAYS_AHEAD)
    )


def projects_in(names: list[str], *, per_statement: int = 200) -> dict[str, set[int]]:
    """{partition: ids of the projects with rows in it}, exact, without reading its rows.

    Each round asks every partition still being walked for its next project id,
    `min(project_id)` above the last one found: a descent of a (project_id, …) index, whatever
    the table's size or statistics. Rounds = the most projects in one partition + 1, and each
    round is one statement per `per_statement` partitions (bench/RESULTS.md, session 6).
    """
    found: dict[str, set[int]] = {name: set() for name in names}
    last: dict[str, int | None] = dict.fromkeys(names)
    walking = list(names)
    with connection.cursor() as cursor:
        while walking:
            going = []
            for at in range(0, len(walking), per_statement):
                chunk = walking[at : at + per_statement]
                probes, params = [], []
                for name in chunk:
                    if last[name] is None:
                        probes.append(f"(SELECT min(project_id) FROM {name})")
                    else:
                        probes.append(f"(SELECT min(project_id) FROM {name} WHERE project_id > %s)")
                        params.append(last[name])
                cursor.execute("SELECT " + ", ".join(probes), params)
                for name, project in zip(chunk, cursor.fetchone(), strict=True):
                    if project is not None:
                        found[name].add(project)
                        last[name] = project
                        going.append(name)
            walking = going
    return found


def count_rows(name: str, project: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {name} WHERE project_id = %s", [project])
        return cursor.fetchone()[0]


def drop_many(names: list[str], *, chunk: int = 16, pause: float = 0.0) -> None:
    """Detach partitions without making inserts wait, then drop them.

    Days of events, which live ingest inserts through, are detached CONCURRENTLY: that takes
    only a lock inserts do not conflict with. A plain DETACH of a group needs the parent's
    exclusive lock for the whole transaction (about 50 ms for 16 days at 10M events): ingest's
    p99 during a 10M purge was 6 to 7 times its p99 without, against 1.8 to 2.8 times this
    way, for the same wall time (bench/RESULTS.md, session 6).

    Inside a caller's transaction, where CONCURRENTLY cannot run, and for daily activity, which
    only the fold job writes, up to `chunk` days are detached per transaction: a plain DETACH
    waits at most DROP_LOCK_TIMEOUT, a group that cannot get it is retried one by one, and a
    day that still cannot falls back to CONCURRENTLY.

    `pause` seconds pass between one detach step (a day of events, a group) and the next.

    The detached tables are then dropped, DROP_TABLES_PER_TRANSACTION at a time, outside any
    parent's lock: removing their files is the slow part of a drop. Killed half-way, a
    partition is left "detach pending" or detached but not dropped; `finish_pending` completes
    both.
    """
    live = [] if connection.in_atomic_block else [n for n in names if parent_of(n) == PARENT]
    rest = [name for name in names if name not in live]
    for at, name in enumerate(live):
        if at and pause:
            time.sleep(pause)
        _detach_concurrently(name)
    for start in range(0, len(rest), chunk):
        if start and pause:
            time.sleep(pause)
        group = rest[start : start + chunk]
        if not _detach(group, attempts=DETACH_ATTEMPTS):
            for name in group:
                if len(group) == 1 or not _detach([name], attempts=DETACH_ATTEMPTS):
                    _detach_concurrently(name)
    detached = live + rest
    for start in range(0, len(detached), DROP_TABLES_PER_TRANSACTION):
        with transaction.atomic(), connection.cursor() as cursor:
            # Rows written earlier in a caller's transaction still owe their FK checks.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            group = detached[start : start + DROP_TABLES_PER_TRANSACTION]
            cursor.execute("DROP TABLE " + ", ".join(group))


def _detach(names: list[str], *, attempts: int = 1) -> bool:
    """One transaction per attempt; False when every attempt's lock budget ran out (nothing
    changed then)."""
    for attempt in range(attempts):
        if attempt:
            time.sleep(DETACH_RETRY_PAUSE)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # as in drop_many()
                cursor.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
                for name in names:
                    cursor.execute(f"ALTER TABLE {parent_of(name)} DETACH PARTITION {name}")
            return True
        except OperationalError:
            if connection.in_atomic_block:
                raise  # CONCURRENTLY cannot run inside a caller's transaction
    return False


def _detach_concurrently(name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        try:
            cursor.execute(f"ALTER TABLE {parent_of(name)} DETACH PARTITION {name} CONCURRENTLY")
        finally:
            cursor.execute("SET lock_timeout = 0")


def finish_pending() -> list[str]:
    """Finish what a killed purge left: detaches still pending, and partitions it detached but
    did not drop (tables named like a partition that belong to no parent)."""
    done: list[str] = []
    if connection.vendor != "postgresql":
        return done
    if connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # as in drop_many()
    for parent in PARENTS:
        if not partitioned(parent):
            continue
        for name in existing(pending=True, parent=parent).values():
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {parent} DETACH PARTITION {name} FINALIZE")
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


# An import's held days (telemetry.ingest.pipeline.FreshDays): plain tables named
# f"{HOLD_PREFIX}{backend pid}_{day:%Y%m%d}", renamed to their partition when attached.
HOLD_PREFIX = "telemetry_import_hold_"


def drop_orphan_holds() -> list[str]:
    """Drop the held tables of sessions that are gone (an import killed mid-way), and this
    session's own: none of its imports is running while it starts one or runs a job. Returns
    their names."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # who is connected now, not earlier
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname = current_schema()"
            " AND starts_with(c.relname, %s) AND split_part(substr(c.relname, %s), '_', 1)"
            " NOT IN (SELECT pid::text FROM pg_stat_activity WHERE pid <> pg_backend_pid())"
            " ORDER BY c.relname",
            [HOLD_PREFIX, len(HOLD_PREFIX) + 1],
        )
        names = [name for (name,) in cursor.fetchall()]
        for name in names:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")
    return names


def analyze_parent() -> list[str]:
    """Refresh the parents' inherited statistics (autovacuum never analyses a partitioned
    parent); every partition is sampled, so this runs as its own daily job."""
    done = [parent for parent in PARENTS if partitioned(parent)]
    with connection.cursor() as cursor:
        for parent in done:
            cursor.execute(f"ANALYZE {parent}")
    return done


def move_into_partitions(cursor, *, table: str, key: str, days: set[dt.date]) -> None:
    """Turn the plain `table` into daily range partitions by `key`, copying every row and
    keeping ids, indexes (recreated on the parent, with `key` added to the primary key) and
    foreign keys. One transaction with the caller's; holds the table exclusively meanwhile."""
    old = f"{table}_old"
    cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    # Definitions are read before the rename, so they name `table`, which the new parent takes.
    cursor.execute(
        "SELECT coalesce('ALTER TABLE ' || %s || ' ADD CONSTRAINT ' || quote_ident(conname)"
        " || ' ' || pg_get_constraintdef(pg_constraint.oid), pg_get_indexdef(indexrelid)),"
        " indexrelid::regclass::text, conname, contype"
        " FROM pg_index LEFT JOIN pg_constraint ON conindid = indexrelid AND conrelid = indrelid"
        " WHERE indrelid = %s::regclass",
        [table, table],
    )
    indexes = cursor.fetchall()
    cursor.execute(
        "SELECT pg_get_constraintdef(oid), conname FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'f'",
        [table],
    )
    foreign = cursor.fetchall()
    cursor.execute(f"ALTER TABLE {table} RENAME TO {old}")
    for _definition, index, constraint, _kind in indexes:
        if constraint:
            cursor.execute(f"ALTER TABLE {old} DROP CONSTRAINT {constraint}")
        else:
            cursor.execute(f"DROP INDEX {index}")
    cursor.execute(
        f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) PARTITION BY RANGE ({key})"
    )
    sequence = f"{table}_id_seq_v2"
    cursor.execute(f"CREATE SEQUENCE {sequence} OWNED BY {table}.id")
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{sequence}')")
    cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id, {key})")
    for day in sorted(days):
        create(cursor, day, table)
    cursor.execute(f"INSERT INTO {table} SELECT * FROM {old}")
    cursor.execute(f"SELECT setval('{sequence}', GREATEST((SELECT max(id) FROM {old}), 1))")
    for definition, _index, _constraint, kind in indexes:
        if kind != "p":  # the primary key was made above, with the partition key in it
            cursor.execute(definition)
    for definition, name in foreign:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    cursor.execute(f"DROP TABLE {old}")
    cursor.execute(f"ANALYZE {table}")


def event_days(cursor, table: str) -> list[dt.date]:
    """The UTC days that rows of `table` fall on (for moving a plain table into partitions)."""
    cursor.execute(f"SELECT DISTINCT (timestamp AT TIME ZONE 'UTC')::date FROM {table} ORDER BY 1")
    return [row[0] for row in cursor.fetchall()]
