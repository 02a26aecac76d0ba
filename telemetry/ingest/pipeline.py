"""The one ingest pipeline: claim → rate limit → hash IP → store events and rollups.

Front doors validate their own wire format into IncomingEvents and call `ingest`; this module is
the only writer of events and rollups. Order matters (CONTRACTS A2): a duplicate consumes no
quota, a refused event stores nothing, and the rollups move in the same statement as the rows.

The hot path is two round trips: one cache script claims each event id and charges both rate
counters (limits.admit), then one SQL statement stores the events and their rollups. On
PostgreSQL that statement runs in autocommit; on SQLite it is one short transaction.
"""

import datetime as dt
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from telemetry.ingest import limits, rollups
from telemetry.ingest.privacy import hash_ip, ip_rate_key, redact
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import Project
from telemetry.services import partitions

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


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # ACCEPTED, DUPLICATE or LIMITED
    limited_by: str = ""  # "install" or "ip" (or "key" when limited per key)
    retry_after: int = 0


# Shared by every event they describe (a batch has a thousand): outcomes are never changed.
_STORED = Outcome(ACCEPTED)
_DUPLICATE = Outcome(DUPLICATE)


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
    """Run validated events through claims, limits and storage; one Outcome per event, in order.

    `limit_key` replaces the client IP as the second rate-limit bucket, for senders that are one
    server behind many users (an API gateway posting with one key).

    Duplicates are stopped by the claim (a copy in flight or sent within the claim's TTL) and,
    past the TTL, by the unique (project, event_id, timestamp) index; those get their hits back.
    """
    now = now or timezone.now()
    outcomes: list[Outcome | None] = [None] * len(events)
    if not events:
        return IngestResult(outcomes=[])
    try:
        ip_hash = hash_ip(ip=client_ip, project_id=project.pk, now=now)
    except DatabaseError as exc:
        raise _unavailable("database", exc) from exc
    # The limiter keys IPs on a window-stable HMAC; the stored hash uses the daily salt.
    rate_key = ip_rate_key(ip=client_ip, project_id=project.pk)
    admission, allowed = _admit(project, events, outcomes, rate_key, limit_key)
    refused = [i for i, o in enumerate(outcomes) if o is not None and o.status == LIMITED]
    if admission is not None and refused:
        limits.give_back(admission, refused)
    if not allowed:
        return IngestResult(outcomes=outcomes)  # type: ignore[arg-type]
    kept = [events[i] for i in allowed]
    try:
        stored = _store(project, kept, ip_hash, now)
    except (DatabaseError, partitions.PartitionUnavailable) as exc:
        if admission is not None:
            limits.give_back(admission, allowed)
        raise _unavailable("database", exc) from exc
    conflicts = []
    for i, ok in zip(allowed, stored, strict=True):
        outcomes[i] = _STORED if ok else _DUPLICATE
        if not ok:
            conflicts.append(i)
    if admission is not None and conflicts:
        # Stored before, past the claim's TTL: a duplicate after all, so it costs nothing.
        # The claim stays, and answers the next copy without a trip to the database.
        limits.give_back(admission, conflicts, release=False)
    return IngestResult(outcomes=outcomes)  # type: ignore[arg-type]


IMPORT_CHUNK = 5_000


def store_imported(
    *,
    project: Project,
    events: list[IncomingEvent],
    now: dt.datetime,
    received_at: list[dt.datetime | None] | None = None,
) -> list[bool]:
    """Store events brought over from a system the platform replaces (import_events); per
    event, whether it was new (False: a copy was stored before, live or by an earlier import).

    The same rows and statement as `ingest`, without its claims and rate limits (the old
    store admitted these events long ago) and with no IP hash: the old stores' hashes can be
    reversed, so an imported event never carries one. `received_at` keeps each event's
    original arrival time (None: `now`). On PostgreSQL the rows are staged with COPY
    (`stage_imported`), the statement's source; database errors propagate: the caller rolls
    back.
    """
    if connection.vendor == "postgresql":
        staged = stage_imported(project=project, events=events, now=now, received_at=received_at)
        return _which_stored(events, store_staged(staged, days=_days(events)))
    stored: list[bool] = []
    for start in range(0, len(events), IMPORT_CHUNK):
        chunk = events[start : start + IMPORT_CHUNK]
        rows = _rows(project, chunk, "", now)
        if received_at is not None:
            adapt = connection.ops.adapt_datetimefield_value
            arrivals = received_at[start : start + IMPORT_CHUNK]
            rows = [
                (*row[:5], adapt(arrival), *row[6:]) if arrival is not None else row
                for row, arrival in zip(rows, arrivals, strict=True)
            ]
        stored.extend(_store_sqlite(project, chunk, rows))
    return stored


def stage_imported(
    *,
    project: Project,
    events: list[IncomingEvent],
    now: dt.datetime,
    received_at: list[dt.datetime | None] | None = None,
) -> bytes:
    """The events as `store_staged` takes them (PostgreSQL): COPY text rows of telemetry_event's
    columns, the same values `ingest` stores (PII redacted when the project asks, no IP hash).

    Needs no database connection, so import workers can encode in parallel."""
    redacting = project.redact_pii
    head = f"{project.pk}\t"
    received = now.isoformat()
    arrivals = received_at if received_at is not None else [None] * len(events)
    lines = []
    for e, arrival in zip(events, arrivals, strict=True):
        values = (
            e.install_id,
            e.name,
            e.timestamp.isoformat(),
            received if arrival is None else arrival.isoformat(),
            e.session_id,
            e.app_version,
            e.os,
            _dumps(redact(e.properties) if redacting else e.properties),
        )
        if e.event_id is not None:
            values = (e.event_id, *values)
        text = "\t".join(values)
        # Nearly no row needs an escape: tell from the joined text (C scans), not per value.
        if text.count("\t") != len(values) - 1 or _copy_special(text):
            text = "\t".join(map(_copy_text, values))
        lines.append(
            f"{head}{'' if e.event_id is not None else _COPY_NULL}{text}"
            f"\t\t{'t' if e.dedupe_any_time else 'f'}\n"
        )
    return "".join(lines).encode()


def stage_imported_days(
    *,
    project: Project,
    events: list[IncomingEvent],
    now: dt.datetime,
    received_at: list[dt.datetime | None] | None = None,
) -> dict[dt.date | None, bytes]:
    """`stage_imported`'s rows grouped by UTC day (None: rows looked up by id on every day), so
    an import can copy the rows of a day it holds straight into that day's hold."""
    arrivals = received_at if received_at is not None else [None] * len(events)
    groups: dict[dt.date | None, tuple[list, list]] = {}
    for e, arrival in zip(events, arrivals, strict=True):
        key = None if e.dedupe_any_time else e.timestamp.astimezone(dt.UTC).date()
        group = groups.setdefault(key, ([], []))
        group[0].append(e)
        group[1].append(arrival)
    return {
        key: stage_imported(project=project, events=group, now=now, received_at=times)
        for key, (group, times) in groups.items()
    }


def store_staged(
    staged: bytes | dict[dt.date | None, bytes],
    *,
    days: set[dt.date],
    fresh: "FreshDays | None" = None,
    held: set[dt.date] | None = None,
) -> list[str | None]:
    """Store rows encoded by `stage_imported` in one transaction (PostgreSQL; a savepoint in the
    caller's): COPY them into a temporary table, then run the ingest statement with that table
    as its source, so each stored event is queued for the rollups exactly once. Returns the ids
    (None: id-less) of the rows stored; a row whose key is stored already is not.

    `staged` may be grouped by day (`stage_imported_days`): with `fresh`, the days it holds are
    copied into its hold instead (stored later, by `FreshDays.attach`), not in the answer;
    `held` names them when the caller has picked them already (`FreshDays.pick`).

    The caller drops repeats of a key within `staged` first (the import does, as before): the
    look-up of a `dedupe_any_time` row does not see rows of its own statement. `days` are the
    rows' UTC days: a missing partition is created and the statement retried."""
    chunks = staged if isinstance(staged, dict) else {None: staged}
    with transaction.atomic(), connection.cursor() as cursor:
        if fresh is None:
            held = set()
        else:
            dated = {day for day in chunks if day is not None}
            held = fresh.pick(dated) if held is None else held & dated
            for day in sorted(held):
                fresh.hold(cursor, day, chunks[day])
        rest = [data for day, data in chunks.items() if day not in held]
        if not rest:
            return []
        cursor.execute(_STAGE_CREATE)
        cursor.execute(f"TRUNCATE {_STAGE}")
        _copy(cursor, _STAGE, b"".join(rest))
        try:
            return _run_store(_STORE_STAGED_SQL, None)
        except IntegrityError as exc:
            if "no partition" not in str(exc):
                raise
        partitions.ensure(days)
        return _run_store(_STORE_STAGED_SQL, None)


def _copy(cursor, table: str, data: bytes) -> None:
    # Django does not wrap psycopg's copy(): its errors become Django's, like execute()'s.
    with connection.wrap_database_errors, cursor.copy(f"COPY {table} FROM STDIN") as copy:
        for start in range(0, len(data), _COPY_CHUNK):
            copy.write(data[start : start + _COPY_CHUNK])


class FreshDays:
    """An import's rows for UTC days that have no event partition yet (PostgreSQL).

    Inserting row by row into a partition costs PostgreSQL seven index insertions and a
    deferred foreign-key trigger per row. A day with no partition has no stored event, so its
    rows are copied instead, batch by batch, straight into a plain table of their own (its
    bounds CHECKed, so ATTACH need not scan it), which no reader sees. Days are then written in
    groups, one transaction each: each day's table is renamed to its partition's name and
    attached, which builds each index in one sorted pass (a key held twice fails the unique
    index: the later copies are deleted and the day attached again); the same transaction
    folds the group's rollups from those tables in one statement (a missing daily-activity
    partition is made the same way), so they move exactly once with the events, without the
    queue. Holding a day is decided per batch: a day with a partition (live events made it) is
    stored as before, and a day whose partition appears while it is held (a live event for that
    day) is stored through the ingest statement at the end, with its dedupe and its locks, as
    any batch.

    The held tables are named after this session's backend, so that two imports never share
    one; tables left by a session that ended mid-import are dropped by the next import.

    With `background`, groups that `attach_before` finds ready are written by a thread on a
    connection of its own, one group at a time, while this session goes on copying batches
    (and the workers mapping them): a batch with a row for a day being written waits for it,
    then finds the day's partition. Only outside a transaction: the thread's session sees the
    held tables once their batches have committed.
    """

    def __init__(self, *, background: bool = False) -> None:
        self.held: dict[dt.date, int] = {}  # day → rows held (committed batches only)
        self.moving: dict[dt.date, int] = {}  # held by the batch in progress
        self.partitioned = partitions.partitioned()
        connection.ensure_connection()
        self.owner = connection.connection.info.backend_pid  # the held tables' session
        if self.partitioned:
            partitions.drop_orphan_holds()
        self._writer = ThreadPoolExecutor(1, "import-held") if background else None
        self._writing: tuple[list[dt.date], Future] | None = None
        self._written = (0, 0, set())  # what finished writes stored, not reported yet
        self._failed: BaseException | None = None

    def settle(self, *, committed: bool) -> int:
        """After the batch's transaction: count what it held, if it committed; returns that."""
        moved, self.moving = self.moving, {}
        if not committed:
            return 0  # a table the batch made went with it
        for day, n in moved.items():
            self.held[day] = self.held.get(day, 0) + n
        return sum(moved.values())

    def pick(self, days: set[dt.date]) -> set[dt.date]:
        """Of a batch's days, those to hold: held already, or without an event partition."""
        if not days or not self.partitioned:
            return set()
        if self._writing is not None and days.intersection(self._writing[0]):
            self._collect(wait=True)  # the batch needs to know what those days became
        have = partitions.existing()
        return {d for d in days if d in self.held or d not in have}

    def hold(self, cursor, day: dt.date, data: bytes) -> None:
        """In the batch's transaction: copy one day's staged rows into its held table."""
        table = _hold_table(day, self.owner)
        if day not in self.held and day not in self.moving:
            low, high = partitions.day_bounds(day)
            _create_bounded(cursor, table, partitions.PARENT, "timestamp", low, high)
        # A held day's rows are never dedupe_any_time ones: drop that last column, "f".
        _copy(cursor, f"{table} ({_EVENT_COLUMNS})", data.replace(b"\tf\n", b"\n"))
        # COPY's text format escapes every newline inside a value: one line, one row.
        self.moving[day] = self.moving.get(day, 0) + data.count(b"\n")

    def attach_before(self, day: dt.date) -> tuple[int, int, set[dt.date]]:
        """Store the held days before `day` once they hold ATTACH_ROWS rows (see attach), while
        workers map the next batches. A source read in time order (VoiceMode's) has no more
        rows for them; a later row of such a day finds its partition and is stored as any.
        With `background`, this starts the write and returns what earlier ones stored."""
        self._collect(wait=False)
        ready = [d for d in sorted(self.held) if d < day]
        idle = self._writing is None and self._failed is None
        if idle and sum(self.held[d] for d in ready) >= ATTACH_ROWS:
            if self._writer is None:
                self._write(ready)
            else:
                group = next(_groups({d: self.held[d] for d in ready}))  # one at a time
                future = self._writer.submit(self._write_apart, group)
                self._writing = (group, future)
        return self._report()

    def attach(self, only: list[dt.date] | None = None) -> tuple[int, int, set[dt.date]]:
        """Store every held day (or `only` those), after any write in progress; returns (rows
        stored, rows that were copies, days written), with what background writes stored. A
        background write that failed is raised once the rest are written; its days stay held,
        for the next call."""
        self._collect(wait=True)
        self._write(sorted(self.held if only is None else only))
        return self._report()

    def close(self) -> None:
        """Wait for a write in progress (its outcome is lost) and stop the thread."""
        if self._writer is not None:
            try:
                self._collect(wait=True)
            finally:
                self._writer.shutdown()
                self._writer = None

    def discard(self) -> None:
        """Drop the held tables (an import that failed: its held rows are not stored, and
        running it again stores them)."""
        self.close()
        if not self.held:
            return
        with connection.cursor() as cursor:
            for day in sorted(self.held):
                cursor.execute(f"DROP TABLE IF EXISTS {_hold_table(day, self.owner)}")
        self.held = {}

    def _write(self, days: list[dt.date]) -> None:
        """Store `days` in groups of up to ATTACH_ROWS held rows, one transaction each, so the
        rollups of an install are upserted once per group rather than once per day (its row is
        rewritten each time, and dead versions slow the next look-up down)."""
        for group in _groups({d: self.held[d] for d in days}):
            self._add(self._count(attach_fresh(group, owner=self.owner)))

    def _write_apart(self, group: list[dt.date]) -> dict[dt.date, int]:
        """In the writer thread, on its own connection (closed after, so none is left open)."""
        try:
            return attach_fresh(group, owner=self.owner)
        finally:
            connection.close()

    def _collect(self, *, wait: bool) -> None:
        """Count a background write that finished (or wait for it); a failure is raised by the
        next attach call, and its days stay held."""
        if self._writing is None or not (wait or self._writing[1].done()):
            return
        _, future = self._writing
        self._writing = None
        try:
            self._add(self._count(future.result()))
        except Exception as exc:
            self._failed = self._failed or exc

    def _count(self, written: dict[dt.date, int]) -> tuple[int, int, set[dt.date]]:
        stored = sum(written.values())
        copies = sum(self.held.pop(day) - n for day, n in written.items())
        return stored, copies, set(written)

    def _add(self, written: tuple[int, int, set[dt.date]]) -> None:
        stored, copies, days = self._written
        self._written = (stored + written[0], copies + written[1], days | written[2])

    def _report(self) -> tuple[int, int, set[dt.date]]:
        """What was written since the last report; a background write's failure first."""
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        return self.take_written()

    def take_written(self) -> tuple[int, int, set[dt.date]]:
        """(rows stored, copies, days) written since the last report: after an attach call
        raised, what it (or a background write) had stored before the failure."""
        written, self._written = self._written, (0, 0, set())
        return written


def _groups(counts: dict[dt.date, int]) -> Iterator[list[dt.date]]:
    """The days of `counts` (day → rows held) in order, in groups of ATTACH_ROWS rows or more
    (the last one less)."""
    group: list[dt.date] = []
    rows = 0
    for day in sorted(counts):
        group.append(day)
        rows += counts[day]
        if rows >= ATTACH_ROWS:
            yield group
            group, rows = [], 0
    if group:
        yield group


# Held rows written per transaction (FreshDays.attach): bigger groups fold installs fewer times
# but hold the parents' and the projects table's locks longer.
ATTACH_ROWS = 250_000
# The group's rollup statement sorts its rows by install and by day several times over; with
# PostgreSQL's default 4 MB each sort of 250,000 rows spills to disk (bench/RESULTS.md,
# session 7: the statement 7.2-8.8 s a group, 5.1-6.1 s with this); for its transaction only.
ATTACH_WORK_MEM = "128MB"


def attach_fresh(days: list[dt.date], *, owner: int) -> dict[dt.date, int]:
    """Store held days (see FreshDays) in one transaction; {day: rows stored}. If that fails
    (a live event made a partition meanwhile, a lock was busy), day by day, and a day whose
    partition exists goes through the ingest statement."""
    have = partitions.existing()
    if partitions.partitioned(partitions.ACTIVITY) and not any(d in have for d in days):
        try:
            return _attach_days(days, owner=owner)
        except DatabaseError:
            pass
    if len(days) > 1:
        return {k: v for day in days for k, v in attach_fresh([day], owner=owner).items()}
    (day,) = days
    if day not in partitions.existing():
        partitions.ensure({day})
    return {day: _insert_held(day, owner=owner)}


def _attach_days(days: list[dt.date], *, owner: int) -> dict[dt.date, int]:
    stored = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{partitions.LOCK_TIMEOUT}'")
        cursor.execute(f"SET LOCAL work_mem = '{ATTACH_WORK_MEM}'")
        for day in days:
            name = partitions.partition_name(day)
            low, high = partitions.day_bounds(day)
            held = _hold_table(day, owner)
            # Not visible to other sessions before the commit, when it is a partition already.
            cursor.execute(f"ALTER TABLE {held} RENAME TO {name}")
            stored[day] = _attach_held(cursor, name, held, low, high)
        fold_new_days(cursor, days)
    return stored


def fold_new_days(cursor, days: list[dt.date]) -> None:
    """The rollups of `days`' events, just attached as new partitions, in the transaction that
    attached them (so exactly once), read from those partitions instead of the queue: no queue
    row to write, read and delete. Daily activity goes through a temporary table to its days'
    partitions, made and attached the same way where missing."""
    have_activity = partitions.existing(parent=partitions.ACTIVITY)
    cursor.execute(f"CREATE TEMPORARY TABLE {_ACTIVITY_STAGE} ({_ACTIVITY_TYPES}) ON COMMIT DROP")
    source = " UNION ALL ".join(
        "SELECT project_id, install_id, name, timestamp, app_version, os, %s::date AS day"
        f" FROM {partitions.partition_name(day)}"
        for day in days
    )
    cursor.execute(
        f"WITH d AS ({source}), "
        + rollups.ROLLUPS_SQL.format(
            install_conflict=rollups.INSTALL_CONFLICT,
            activity_table=_ACTIVITY_STAGE,
            activity_conflict="",
            count_conflict=rollups.COUNT_CONFLICT,
        )
        + " SELECT 1",
        days,
    )
    for day in days:
        rows = f"SELECT {_ACTIVITY_COLUMNS} FROM {_ACTIVITY_STAGE} WHERE day = %s"
        if day in have_activity:
            cursor.execute(
                f"INSERT INTO {partitions.ACTIVITY} ({_ACTIVITY_COLUMNS}) {rows}"
                f" ORDER BY project_id, install_id {rollups.ACTIVITY_CONFLICT}",
                [day],
            )
            continue
        activity = partitions.partition_name(day, partitions.ACTIVITY)
        _create_bounded(cursor, activity, partitions.ACTIVITY, "day", day, day + _ONE_DAY)
        cursor.execute(f"INSERT INTO {activity} ({_ACTIVITY_COLUMNS}) {rows}", [day])
        _attach(cursor, activity, partitions.ACTIVITY, day, day + _ONE_DAY)


def _attach_held(cursor, name: str, held: str, low, high) -> int:
    """Attach a held day's table (renamed to `name`; its CHECK keeps `held`'s name); returns
    its rows. A key copied in two batches fails the unique index ATTACH builds: then only the
    first copy of each key (in file order, the heap's order) stays, and the day is attached
    again."""
    try:
        with transaction.atomic():
            _attach(cursor, name, partitions.PARENT, low, high, check=f"{held}_bounds")
    except IntegrityError:
        cursor.execute(
            f"DELETE FROM {name} WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number()"
            f' OVER (PARTITION BY project_id, event_id, "timestamp" ORDER BY ctid) AS copy'
            f" FROM {name} WHERE event_id IS NOT NULL) c WHERE copy > 1)"
        )
        _attach(cursor, name, partitions.PARENT, low, high, check=f"{held}_bounds")
    cursor.execute(f"SELECT count(*) FROM {name}")
    return cursor.fetchone()[0]


_ACTIVITY_STAGE = "telemetry_import_activity"
_ACTIVITY_COLUMNS = "project_id, install_id, day, events, app_version, os"
_ACTIVITY_TYPES = (
    "project_id bigint, install_id varchar(64), day date, events integer,"
    " app_version varchar(64), os varchar(64)"
)
_ONE_DAY = dt.timedelta(days=1)


def _create_bounded(cursor, name: str, parent: str, key: str, low, high) -> None:
    """A plain table shaped as `parent`, CHECKed to one partition's bounds before any row is in
    it, so that ATTACH PARTITION need not scan it."""
    cursor.execute(f"CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS)")
    partitions.skip_statistics(cursor, name, parent)
    cursor.execute(
        f'ALTER TABLE {name} ADD CONSTRAINT {name}_bounds CHECK ("{key}" >= %s AND "{key}" < %s)',
        [low, high],
    )


def _attach(cursor, name: str, parent: str, low, high, *, check: str | None = None) -> None:
    """Attach a table made by _create_bounded: PostgreSQL builds the parent's indexes on it (one
    sorted pass each) and checks its foreign keys in one query; then its CHECK (named `check`
    when the table was made under another name) goes."""
    cursor.execute(
        f"ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [low, high]
    )
    cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {check or f'{name}_bounds'}")


def _insert_held(day: dt.date, *, owner: int) -> int:
    """A held day whose partition exists: the ingest statement, from the held rows."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_STAGE_CREATE)
        cursor.execute(f"TRUNCATE {_STAGE}")
        cursor.execute(
            f"INSERT INTO {_STAGE} ({_STAGE_COLUMNS}) SELECT {_EVENT_COLUMNS}, false"
            f" FROM {_held_first_copies(day, owner)}"
        )
        n = len(_run_store(_STORE_STAGED_SQL, None))
        cursor.execute(f"DROP TABLE {_hold_table(day, owner)}")
    return n


def _held_first_copies(day: dt.date, owner: int) -> str:
    """The held rows of `day`, a key's later copies (from later batches) left out."""
    return (
        f'(SELECT *, row_number() OVER (PARTITION BY event_id, "timestamp" ORDER BY ctid)'
        f" AS copy FROM {_hold_table(day, owner)}) h WHERE event_id IS NULL OR copy = 1"
    )


def _hold_table(day: dt.date, owner: int) -> str:
    """The held table for `day` (FreshDays) of the session `owner` (its backend's pid, which
    keeps two imports of the same day apart)."""
    return f"{partitions.HOLD_PREFIX}{owner}_{day:%Y%m%d}"


_COPY_CHUNK = 1 << 20


def _days(events: list[IncomingEvent]) -> set[dt.date]:
    return {e.timestamp.astimezone(dt.UTC).date() for e in events}


_COPY_NULL = "\\N\t"  # an id-less event's event_id, then the column separator
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """A text value as COPY's text format writes it (backslash escapes)."""
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def _copy_special(text: str) -> bool:
    """Whether `text` holds a character COPY's text format escapes, other than a tab."""
    return "\\" in text or "\n" in text or "\r" in text


def _unavailable(service: str, exc: Exception) -> ServiceUnavailable:
    log.warning("ingest: %s unavailable (%s)", service, type(exc).__name__)
    return ServiceUnavailable(service)


def _admit(
    project: Project,
    events: list[IncomingEvent],
    outcomes: list[Outcome | None],
    rate_key: str,
    limit_key: str | None,
) -> tuple[limits.Admission | None, list[int]]:
    """Claim ids and charge counters in one cache call; mark duplicates and limited events.

    The install limit is applied first, then the client (IP or key) limit to what passed.
    Returns the admission (None when failing open) and the indexes allowed, in order.
    """
    second = "key" if limit_key else "ip"
    pk = project.pk
    counters = [limits.Charge(f"tm:{pk}:{second}", limit_key or rate_key, project.ip_rate, 0)]
    # A batch runs this loop a thousand times: what is the same for every event is made once.
    group, rate, charge = f"tm:{pk}:install", project.install_rate, limits.Charge
    position: dict[str, int] = {}
    installs = []
    for e in events:
        install_id = e.install_id
        if not install_id:
            installs.append(0)
            continue
        at = position.get(install_id)
        if at is None:
            at = position[install_id] = len(counters)
            counters.append(charge(group, install_id, rate, 0))
        installs.append(at)
    claim = f"tm:{pk}:claim:"
    claims = [claim + e.event_id if e.event_id else None for e in events]
    try:
        admission = limits.admit(
            claims=claims,
            installs=installs,
            counters=counters,
            claim_ttl=settings.TELEMETRY_CLAIM_TTL_SECONDS,
        )
    except limits.LimiterUnavailable as exc:
        if settings.RATELIMIT_FAIL_OPEN:
            log.warning("ingest: rate-limit cache unavailable (%s), failing open", exc)
            return None, _first_copies(events, outcomes)
        raise _unavailable("cache", exc) from exc
    fresh = []
    for i, ok in enumerate(admission.fresh):
        if ok:
            fresh.append(i)
        else:
            outcomes[i] = _DUPLICATE
    by_install: dict[int, list[int]] = defaultdict(list)
    passed = []
    for i in fresh:
        if installs[i]:
            by_install[installs[i]].append(i)
        else:
            passed.append(i)  # events with no install id face the client limit only
    for counter, idx in by_install.items():
        ok = admission.allowed(counter)
        passed.extend(idx[:ok])
        if ok < len(idx):
            limited = Outcome(LIMITED, "install", admission.retry_after(counter))
            for i in idx[ok:]:
                outcomes[i] = limited
    passed.sort()
    # Hits of install-refused events are refunded; until then they may only make this stricter.
    ok = min(len(passed), admission.allowed(0))
    if ok < len(passed):
        limited = Outcome(LIMITED, second, admission.retry_after(0))
        for i in passed[ok:]:
            outcomes[i] = limited
    return admission, passed[:ok]


def _first_copies(events: list[IncomingEvent], outcomes: list[Outcome | None]) -> list[int]:
    """Failing open there are no claims: repeats inside the request are still duplicates."""
    seen: set[str] = set()
    keep = []
    for i, e in enumerate(events):
        if e.event_id and e.event_id in seen:
            outcomes[i] = _DUPLICATE
        else:
            seen.add(e.event_id or "")
            keep.append(i)
    return keep


def _rows(project: Project, events: list[IncomingEvent], ip_hash: str, now: dt.datetime) -> list:
    """One telemetry_event row (column order of _EVENT_COLUMNS) per event, plus its
    dedupe_any_time flag last (not a column: it decides whether the row is inserted).
    Times are as the connection binds them (SQLite)."""
    stamp = connection.ops.adapt_datetimefield_value
    received = stamp(now)
    redacting = project.redact_pii
    return [
        (
            project.pk,
            e.event_id,
            e.install_id,
            e.name,
            stamp(e.timestamp),
            received,
            e.session_id,
            e.app_version,
            e.os,
            redact(e.properties) if redacting else e.properties,
            ip_hash,
            e.dedupe_any_time,
        )
        for e in events
    ]


def _store(
    project: Project, events: list[IncomingEvent], ip_hash: str, now: dt.datetime
) -> list[bool]:
    """Store the events and their rollups; per event, whether it was new (False: a stored copy).

    PostgreSQL: one statement in autocommit; a day without a partition is created and the
    statement run once more. SQLite: one transaction.
    """
    if connection.vendor != "postgresql":
        return _store_sqlite(project, events, _rows(project, events, ip_hash, now))
    params = _statement_params(project, events, ip_hash, now)
    sql = _STORE_ANY_TIME_SQL if any(e.dedupe_any_time for e in events) else _STORE_POSTGRES_SQL
    try:
        inserted = _run_store(sql, params)
    except IntegrityError as exc:
        if "no partition" not in str(exc):
            raise
        partitions.ensure({e.timestamp.astimezone(dt.UTC).date() for e in events})
        inserted = _run_store(sql, params)
    return _which_stored(events, inserted)


def _statement_params(
    project: Project, events: list[IncomingEvent], ip_hash: str, now: dt.datetime
) -> list:
    """The live statement's parameters: what every row of the request shares (project, arrival
    time, IP hash) once, then the rows' own values as one JSON array of arrays (`_JSON_SOURCE`).
    """
    redacting = project.redact_pii
    rows = [
        (
            e.event_id,
            e.install_id,
            e.name,
            e.timestamp.isoformat(),
            e.session_id,
            e.app_version,
            e.os,
            redact(e.properties) if redacting else e.properties,
            e.dedupe_any_time,
        )
        for e in events
    ]
    return [project.pk, now, ip_hash, _dumps(rows)]


def _which_stored(events: list[IncomingEvent], inserted: list[str | None]) -> list[bool]:
    new_ids = {i for i in inserted if i is not None}
    return [e.event_id is None or e.event_id in new_ids for e in events]


_EVENT_COLUMNS = (
    "project_id, event_id, install_id, name, timestamp, received_at,"
    " session_id, app_version, os, properties, ip_hash"
)
_CONFLICT = "ON CONFLICT (project_id, event_id, timestamp) WHERE event_id IS NOT NULL DO NOTHING"

# Events in one statement; on PostgreSQL their rollup rows go to a queue that fold_rollups()
# folds in. The INSERT's RETURNING rows feed the queue, so a row that conflicts (a copy stored
# before) is queued nowhere: each stored event is queued exactly once, by its own commit.
_STORE_POSTGRES = f"""
WITH ev AS (
    INSERT INTO telemetry_event ({_EVENT_COLUMNS})
    SELECT c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10 FROM {{source}}
    {{any_time}}
    {_CONFLICT}
    RETURNING project_id, event_id, install_id, name, timestamp, app_version, os
), queued AS (
    INSERT INTO {rollups.ROLLUP_QUEUE} ({rollups.QUEUE_COLUMNS})
    SELECT {rollups.QUEUE_COLUMNS} FROM ev
)
SELECT event_id FROM ev
"""
_ROW_TYPES = """c0 bigint, c1 text, c2 text, c3 text, c4 timestamptz, c5 timestamptz, c6 text,
    c7 text, c8 text, c9 jsonb, c10 text, c11 boolean"""
# Imports stage their rows here with COPY (cheaper than one JSON document to take apart), one
# batch at a time; the table is the session's own and emptied at every commit.
_STAGE = "telemetry_import_stage"
_STAGE_CREATE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} ({_ROW_TYPES}) ON COMMIT DELETE ROWS"
)
_STAGE_COLUMNS = ", ".join(f"c{i}" for i in range(12))


def _run_store(sql: str, params: list | None) -> list[str | None]:
    if connection.in_atomic_block:
        # Inside a caller's transaction a failed statement would poison it: use a savepoint,
        # so a missing partition can be created and the statement retried.
        with transaction.atomic():
            return [row[0] for row in _execute_prepared(sql, params)]
    return [row[0] for row in _execute_prepared(sql, params)]


def _execute_prepared(sql: str, params: list | None) -> list[tuple]:
    """Run a hot statement prepared on the server, once per connection.

    Django binds parameters on the client, so PostgreSQL parses and plans every statement it
    is sent. Planning an insert into the partitioned event table with its indexes cost the
    server about twice what running it does (bench/RESULTS.md); a prepared statement
    is planned once per connection (and again by PostgreSQL itself after partition DDL).
    DATABASE_PREPARED_STATEMENTS=0 (no prepare_threshold on the connection) turns this off,
    for poolers that cannot keep them: the statement is then bound on the server unnamed.
    """
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall()


def _store_sqlite(project: Project, events: list[IncomingEvent], rows: list) -> list[bool]:
    """SQLite has no data-modifying CTEs: the same writes as statements in one transaction."""
    inserted: list[str | None] = []
    stored_events = []
    with transaction.atomic(), connection.cursor() as cursor:
        for event, row in zip(events, rows, strict=True):
            *row, any_time = row
            if any_time:
                cursor.execute(
                    "SELECT 1 FROM telemetry_event WHERE project_id = %s AND event_id = %s",
                    [row[0], row[1]],
                )
                if cursor.fetchone() is not None:
                    continue
            row[9] = _dumps(row[9])
            cursor.execute(
                f"INSERT INTO telemetry_event ({_EVENT_COLUMNS})"
                f" VALUES ({','.join(['%s'] * len(row))}) {_CONFLICT} RETURNING event_id",
                row,
            )
            hit = cursor.fetchone()
            if hit is not None:
                inserted.append(hit[0])
                stored_events.append(event)
        if stored_events:
            rollups.bump(cursor, project, stored_events)
    return _which_stored(events, inserted)


def _iso(value):
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_iso)
# JSONEncoder.encode builds its C encoder on every call (about 1 µs; an import encodes every
# row's properties): built once here. No circular-reference bookkeeping: what is encoded was
# parsed from JSON or built for this call, so it holds no cycle.
_C_ENCODE = (
    json.encoder.c_make_encoder(
        None, _iso, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
    if json.encoder.c_make_encoder is not None
    else None
)


def _dumps(value) -> str:
    """json.dumps(value, separators=(",", ":"), default=_iso), without building an encoder."""
    if _C_ENCODE is None:  # an interpreter without the C accelerator
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


# The rows arrive as one JSON array of arrays, each element taken by its position: the encoder
# in C writes it at a fifth of the cost of one object per row (keys repeated a thousand times),
# and PostgreSQL reads a jsonb array element by its offset instead of looking up keys. What all
# rows of a request share (project, arrival time, IP hash) is a parameter of its own, not a
# value repeated in every row: a third of the document, and a time parsed once, not per row.
_SHARED = "%s::bigint AS c0, %s::timestamptz AS c5, %s::text AS c10"
_PER_ROW = [
    column.split()
    for column in _ROW_TYPES.split(",")
    if column.split()[0] not in ("c0", "c5", "c10")
]
_JSON_COLUMNS = ", ".join(
    f"j -> {i} AS {name}" if kind == "jsonb" else f"(j ->> {i})::{kind} AS {name}"
    for i, (name, kind) in enumerate(_PER_ROW)
)
_JSON_SOURCE = f"(SELECT {_SHARED}, {_JSON_COLUMNS} FROM jsonb_array_elements(%s::jsonb) AS j) AS x"
# Only rows flagged dedupe_any_time look for their id on every day; the check names the parent
# table without a time bound, so planning it touches every partition. Live requests without
# such a row use the statement without it, so that the common case never pays for it.
_ANY_TIME_CHECK = """WHERE CASE WHEN c11 THEN NOT EXISTS (
        SELECT 1 FROM telemetry_event e WHERE e.project_id = x.c0 AND e.event_id = x.c1
    ) ELSE TRUE END"""
_STORE_POSTGRES_SQL = _STORE_POSTGRES.format(source=_JSON_SOURCE, any_time="")
_STORE_ANY_TIME_SQL = _STORE_POSTGRES.format(source=_JSON_SOURCE, any_time=_ANY_TIME_CHECK)
# An import batch is one statement for thousands of rows: planning is nothing beside it.
_STORE_STAGED_SQL = _STORE_POSTGRES.format(source=f"{_STAGE} AS x", any_time=_ANY_TIME_CHECK)
