"""A private PostgreSQL primary + streaming replica for the replica tests: initdb in a temp
folder, pg_basebackup -R, free loopback ports, run as the postgres user. The machine's own
cluster is never touched; both servers are stopped by their data folders and removed."""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.reliability.servers import free_port


def binaries() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def as_postgres() -> list[str] | None:
    """The prefix that runs a command as the postgres user, or None if this user cannot."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    if me == "postgres":
        return []
    if os.geteuid() == 0 and shutil.which("runuser"):
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None
        return ["runuser", "-u", "postgres", "--"]
    return None


class PgPair:
    def __init__(self) -> None:
        self.bin = binaries()
        self.prefix = as_postgres()
        self.root = Path(tempfile.mkdtemp(prefix="tm-replica-"))
        self.primary_port = free_port()
        self.replica_port = free_port()

    def _run(self, *args: str, timeout: int = 60) -> None:
        out = subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")

    def url(self, port: int, db: str = "telemetry") -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{db}"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def replica_url(self) -> str:
        return self.url(self.replica_port)

    def _pg_ctl(self, folder: str, action: str, *extra: str) -> None:
        data = str(self.root / folder)
        log = str(self.root / f"{folder}.log")
        self._run(str(self.bin / "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", action, *extra)

    def start(self) -> "PgPair":
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres")
        primary = self.root / "primary"
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(primary),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        settings = (
            f"\nport = {self.primary_port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.root}'\nwal_level = replica\n"
            "max_wal_senders = 4\nfsync = off\nshared_buffers = 32MB\n"
        )
        # Appending keeps the file's owner (root may write it, and postgres is its owner).
        with open(primary / "postgresql.conf", "a") as conf:
            conf.write(settings)
        self._pg_ctl("primary", "start")
        with psycopg.connect(self.url(self.primary_port, "postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE telemetry")
        replica = self.root / "replica"
        self._run(
            str(self.bin / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary_port),
            "-U",
            "postgres",
            "-D",
            str(replica),
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
        )
        with open(replica / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.replica_port}\n")
        self._pg_ctl("replica", "start")
        return self

    def replica_sql(self, sql: str):
        with psycopg.connect(self.replica_url, autocommit=True, connect_timeout=2) as conn:
            return conn.execute(sql).fetchall()

    def primary_sql(self, sql: str):
        with psycopg.connect(self.primary_url, autocommit=True, connect_timeout=2) as conn:
            return conn.execute(sql).fetchall()

    def wait_replayed(self, timeout: float = 20) -> None:
        """Until the replica has replayed everything the primary wrote so far."""
        (lsn,) = self.primary_sql("SELECT pg_current_wal_lsn()::text")[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.replica_sql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")[0][0]
            if done:
                return
            time.sleep(0.1)
        raise RuntimeError("the replica did not catch up")

    def stop_replica(self) -> None:
        self._pg_ctl("replica", "stop", "-m", "immediate")

    def stop(self) -> None:
        for folder in ("replica", "primary"):
            if (self.root / folder / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError):
                    self._pg_ctl(folder, "stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)
