"""Cross-process locks for jobs that must not run twice at once (the purge).

PostgreSQL: a session advisory lock, shared by every host and released by the server when the
holder dies. SQLite is one machine by nature: an flock on DATA_DIR/locks, released by the kernel
when the holder dies. Either way a SIGKILLed purge never leaves a stale lock behind.
"""

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator

from django.conf import settings
from django.db import connection


class LockBusy(Exception):
    """Another process holds the lock; the caller reports it and does nothing."""


def _advisory_key(name: str) -> int:
    # A stable signed 64-bit key per name, so unrelated lock names do not collide.
    return int.from_bytes(
        hashlib.sha256(f"telemetry:{name}".encode()).digest()[:8], "big", signed=True
    )


@contextlib.contextmanager
def job_lock(name: str) -> Iterator[None]:
    """Hold the named lock for the block, or raise LockBusy at once (never wait)."""
    if connection.vendor == "postgresql":
        key = _advisory_key(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not cursor.fetchone()[0]:
                raise LockBusy(name)
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    folder = settings.DATA_DIR / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(name) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
