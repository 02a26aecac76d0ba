"""Import benchmark: rows per second of `import_events --format voicemode-d1` on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tm_bench_import \
        .venv/bin/python bench/import_events.py --rows 1000000

Writes a VoiceMode D1 `events` table (the worker's schema, rows shaped as its client sends them)
of N rows spread over the last 85 days into a SQLite file, recreates the database, migrates,
then times the import service end to end (read, map, store with rollups, ANALYZE) and checks
the rollups against a brute-force count. On a shared machine the rate follows everyone's load,
so it also prints the CPU time the import used per row: this process with its mapping workers,
and its PostgreSQL backend (read from /proc when the server runs on this machine).
"""

import argparse
import datetime as dt
import os
import random
import resource
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATA_DIR", "/tmp/tm-bench-import")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

SLUG = "bench-import"


def recreate_database(url: str) -> None:
    import psycopg

    name = urlparse(url).path.lstrip("/")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def write_source(path: Path, rows: int, now: dt.datetime) -> None:
    from tests.imports.stores import VOICEMODE_SCHEMA, voicemode_row

    if path.exists():
        return
    rng = random.Random(14)
    installs = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(max(10, rows // 40))]
    conn = sqlite3.connect(path)
    conn.executescript(VOICEMODE_SCHEMA)
    batch = []
    for _ in range(rows):
        when = now - dt.timedelta(seconds=rng.uniform(3600, 85 * 86400))
        row = voicemode_row(when, rng.choice(installs))
        batch.append(list(row.values()))
        if len(batch) == 50_000:
            conn.executemany("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?)", batch)
            batch = []
    conn.executemany("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?)", batch)
    conn.commit()
    conn.close()


def cpu_seconds(pid: int | None = None, *, who: tuple = ()) -> float | None:
    """User + system CPU seconds of `pid` (None: of `who`, by default this process and its
    waited-for children: the mapping workers)."""
    if pid is None:
        who = who or (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        usage = [resource.getrusage(w) for w in who]
        return sum(u.ru_utime + u.ru_stime for u in usage)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU seconds every process of this machine has used (bench/harness.py's busy time of
    each CPU): with the import's writer thread on connections of its own, PostgreSQL's share is
    more backends than the main connection's."""
    from harness import cpu_times  # bench/ is on the path of every script that runs this

    return sum(cpu["busy"] for cpu in cpu_times().values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--source", type=Path, help="Reuse or write the D1 file here.")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("set DATABASE_URL to a PostgreSQL database this benchmark may drop")
    now = dt.datetime.now(dt.UTC)
    source = args.source or Path(f"/tmp/tm-bench-import-{args.rows}.sqlite")
    t0 = time.perf_counter()
    write_source(source, args.rows, now)
    print(f"source: {source} ({time.perf_counter() - t0:.1f} s)")
    recreate_database(url)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from telemetry.services.imports import import_events
    from telemetry.services.projects import create_project

    call_command("migrate", verbosity=0)
    project = create_project(slug=SLUG, contract="voicemode", retention_days=90).project
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    main0 = cpu_seconds(who=(resource.RUSAGE_SELF,))
    py0, pg0, all0 = cpu_seconds(), cpu_seconds(backend), machine_cpu_seconds()
    t0 = time.perf_counter()
    report = import_events(project=project, fmt="voicemode-d1", path=source, now=now)
    elapsed = time.perf_counter() - t0
    py, pg = cpu_seconds() - py0, cpu_seconds(backend)
    machine = machine_cpu_seconds() - all0
    main_cpu = cpu_seconds(who=(resource.RUSAGE_SELF,)) - main0
    print(
        f"rows {report.rows:,}  stored {report.stored:,}  duplicates {report.duplicates:,}"
        f"  refused {report.refused}  aggregated {report.aggregated}"
    )
    print(f"import: {elapsed:.1f} s = {report.rows / elapsed:,.0f} rows/s")
    per_row = 1e6 / max(report.rows, 1)
    print(
        f"cpu: python (with workers) {py:.1f} s = {py * per_row:.0f} µs/row"
        f" (main process {main_cpu * per_row:.0f})",
        end="",
    )
    if pg is not None and pg0 is not None:
        print(f", main connection's backend {(pg - pg0) * per_row:.0f} µs/row", end="")
    print(f"; load average {os.getloadavg()[0]:.2f}")
    rest = (machine - py) * per_row
    print(
        f"cpu, whole machine: {machine:.1f} s = {machine * per_row:.0f} µs/row, of which not"
        f" this process or its workers (PostgreSQL's backends, mostly) {rest:.0f}"
    )
    peak = [
        resource.getrusage(w).ru_maxrss // 1024
        for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    ]
    print(f"peak RSS: main process {peak[0]} MB, largest mapping worker {peak[1]} MB")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT sum(events) FROM telemetry_dailycount WHERE project_id = %s),"
            " (SELECT count(*) FROM telemetry_event WHERE project_id = %s),"
            " (SELECT count(*) FROM telemetry_dailyactivity WHERE project_id = %s),"
            " (SELECT count(*) FROM (SELECT DISTINCT install_id, (timestamp AT TIME ZONE 'UTC')"
            "::date FROM telemetry_event WHERE project_id = %s) d)",
            [project.pk] * 4,
        )
        counted, events, activity, brute_activity = cursor.fetchone()
    print(f"rollups exact: {counted == events and activity == brute_activity}")


if __name__ == "__main__":
    main()
