"""Where analytics read from and for how long: the read replica when one is configured, healthy
and close enough behind, else the primary; every statement inside a per-request deadline.

Views wrap their work in `reading()`; selectors take their connection from `connection()`, and
the ORM's reads follow through `AnalyticsRouter`. Writes always go to the primary.
"""

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar

from django.conf import settings
from django.db import DatabaseError, connections, transaction

log = logging.getLogger(__name__)

PRIMARY = "default"
REPLICA = "replica"

_alias: ContextVar[str | None] = ContextVar("telemetry_analytics_alias", default=None)
# Values a request's selectors share (the oldest activity day): one read per `reading()` block.
_memo: ContextVar[dict | None] = ContextVar("telemetry_analytics_memo", default=None)
_replica_state: dict[str, float] = {}  # "down_until" / "ok_until": monotonic seconds
_lock = threading.Lock()

# How far behind the primary the replica is, in seconds; 0 when it has replayed all it received.
_LAG_SQL = (
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0"
    " WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)


class AnalyticsTimeout(Exception):
    """An analytics read ran past its deadline and was cancelled; the caller asks for less."""


class AnalyticsRouter:
    """Reads made inside `reading()` go to the alias it chose; everything else, and every
    write, to the primary. Only the primary is migrated."""

    def db_for_read(self, model, **hints) -> str | None:
        return _alias.get()

    def db_for_write(self, model, **hints) -> str:
        return PRIMARY

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        return True  # the replica is a copy of the primary: same rows, same ids

    def allow_migrate(self, db, app_label, model_name=None, **hints) -> bool:
        return db == PRIMARY


def alias() -> str:
    """The alias analytics read from in this context (the primary outside `reading()`)."""
    return _alias.get() or PRIMARY


def connection():
    return connections[alias()]


def vendor() -> str:
    return connection().vendor


def memo(key, compute):
    """compute() once per `reading()` block, so the selectors of one request read a shared
    value once; outside one (jobs, services), every call computes."""
    cache = _memo.get()
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


def forget_replica_state() -> None:
    with _lock:
        _replica_state.clear()


def _mark_down(reason: str) -> None:
    seconds = settings.DATABASE_REPLICA_RETRY_SECONDS
    with _lock:
        _replica_state.pop("ok_until", None)
        _replica_state["down_until"] = time.monotonic() + seconds
    log.warning("analytics read replica not used for %ss: %s", seconds, reason)


def _replica_usable() -> bool:
    """Whether the replica answers and lags at most DATABASE_REPLICA_MAX_LAG_SECONDS; the answer
    is kept for a few seconds so a dead replica costs one connect timeout, not one per page."""
    now = time.monotonic()
    with _lock:
        if _replica_state.get("down_until", 0) > now:
            return False
        if _replica_state.get("ok_until", 0) > now:
            return True
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(_LAG_SQL)
            lag = float(cursor.fetchone()[0] or 0)
    except DatabaseError as exc:
        connections[REPLICA].close()
        _mark_down(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
        return False
    if lag > settings.DATABASE_REPLICA_MAX_LAG_SECONDS:
        _mark_down(f"{lag:.0f} s behind the primary")
        return False
    with _lock:
        _replica_state["ok_until"] = now + settings.DATABASE_REPLICA_CHECK_SECONDS
    return True


def choose() -> str:
    if replica_configured() and _replica_usable():
        return REPLICA
    return PRIMARY


def _is_timeout(exc: BaseException) -> bool:
    cause = exc.__cause__
    if getattr(cause, "sqlstate", None) == "57014":  # query_canceled: statement_timeout
        return True
    return isinstance(cause, sqlite3.OperationalError) and "interrupted" in str(cause)


@contextlib.contextmanager
def _deadline(name: str, seconds: float) -> Iterator[None]:
    """Cancel any statement on `name` that would end past now + `seconds`."""
    conn = connections[name]
    deadline = time.monotonic() + seconds
    granted = [None]  # the statement_timeout (ms) last set in this transaction

    def wrapper(execute, sql, params, many, context):
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0:
            raise AnalyticsTimeout(f"past the {seconds:g} s analytics deadline")
        if conn.vendor == "postgresql" and (granted[0] is None or granted[0] - left > 1000):
            # Local to the read transaction, shrinking as the request's time is spent.
            execute("SELECT set_config('statement_timeout', %s, true)", [str(left)], False, context)
            granted[0] = left
        return execute(sql, params, many, context)

    with conn.execute_wrapper(wrapper):
        if conn.vendor != "sqlite":
            yield
            return
        # SQLite has no statement timeout: its VM asks this handler every 10,000 steps.
        conn.ensure_connection()
        raw = conn.connection
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            yield
        finally:
            raw.set_progress_handler(None, 0)


@contextlib.contextmanager
def reading(*, using: str | None = None, timeout: float | None = None) -> Iterator[str]:
    """Run the block's analytics reads on the chosen alias, in one read transaction, within
    `timeout` seconds (TELEMETRY_ANALYTICS_TIMEOUT_SECONDS, below gunicorn's worker timeout).

    Raises AnalyticsTimeout when a statement is cancelled for the deadline.
    """
    name = using or choose()
    seconds = settings.TELEMETRY_ANALYTICS_TIMEOUT_SECONDS if timeout is None else timeout
    token = _alias.set(name)
    memo_token = _memo.set({})
    try:
        with transaction.atomic(using=name), _deadline(name, seconds):
            yield name
    except DatabaseError as exc:
        if _is_timeout(exc):
            raise AnalyticsTimeout(f"cancelled at the {seconds:g} s analytics deadline") from exc
        raise
    finally:
        _memo.reset(memo_token)
        _alias.reset(token)


def catch_up() -> None:
    """Fold the rollup rows queued so far (on the primary) so a read counts every event
    stored before it. Best effort: when a fold is already running, or the primary cannot
    write, the read goes on and the numbers are at most one fold interval behind."""
    from telemetry.ingest.rollups import fold_rollups

    try:
        fold_rollups(wait=False)
    except DatabaseError as exc:
        log.warning("rollup catch-up before a read skipped (%s)", type(exc).__name__)


def fold_overdue() -> bool:
    """Whether no fold has emptied the rollup queue for TELEMETRY_READER_FOLD_AFTER_SECONDS
    (or none is on record, or the cache does not answer)."""
    from telemetry.ingest.rollups import last_fold

    last = last_fold()
    return last is None or time.time() - last > settings.TELEMETRY_READER_FOLD_AFTER_SECONDS


def run(fn, *args, **kwargs):
    """fn(*args, **kwargs) inside `reading()`; if the replica fails under it (down, restarted,
    a recovery conflict), once more on the primary, so a replica never breaks a page.

    A read from the primary folds the queued rollups first (catch_up), so it counts every
    event stored before it. A read from the replica does not: that fold is a write on the
    primary for every page view, which is what the replica is there to spare (bench/replica.py:
    ~2 ms of the primary's CPU a page), and the replica trails the primary anyway; the fold
    job (every 10 s) keeps it at most one fold interval plus the replica's lag behind. Unless
    the job is late (fold_overdue: its broker is down), then the reader folds as before."""
    name = choose()
    folded = name == PRIMARY or fold_overdue()
    if folded:
        catch_up()
    try:
        with reading(using=name):
            return fn(*args, **kwargs)
    except AnalyticsTimeout:
        raise
    except DatabaseError as exc:
        if name == PRIMARY:
            raise
        connections[name].close()
        _mark_down(f"{type(exc).__name__} during a read")
    if not folded:
        catch_up()
    with reading(using=PRIMARY):
        return fn(*args, **kwargs)
