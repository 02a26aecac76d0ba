"""Purge benchmark on PostgreSQL: ingest p99 with and without a concurrent purge, and table
size after purge + VACUUM over repeated cycles.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tm_bench_purge \
        .venv/bin/python bench/purge.py --events 300000

Loads N events spread over 120 days (COPY, with matching rollups), purges the oldest 30 days
(retention 90) while a second process ingests single events through the real pipeline, then
reloads and purges the old days twice more, measuring pg_total_relation_size after VACUUM.
"""

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATA_DIR", "/tmp/tm-bench-purge")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

SLUG = "bench-purge"
NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)
NAMES = ["app.start", "app.stop", "cmd.run", "app.crash"]
TABLES = ["telemetry_event", "telemetry_dailyactivity", "telemetry_install"]


def ensure_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django():
    import django

    django.setup()


def copy_rows(cursor, table: str, columns: list[str], rows) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def load(project, *, events: int, first_day: int, last_day: int, tag: str, counts: bool) -> None:
    """COPY `events` events received between first_day and last_day days before NOW, plus the
    rollups the pipeline would have written for them (fresh install ids per tag)."""
    from django.db import connection, transaction

    rng = random.Random(tag)
    installs_n = max(10, events // 50)
    install_ids = [f"{tag}_{i:08d}" for i in range(installs_n)]
    activity: dict[tuple[str, dt.date], int] = {}
    seen: dict[str, list] = {}
    daily: dict[tuple[dt.date, str], int] = {}

    def event_rows():
        for _ in range(events):
            ago = rng.uniform(first_day, last_day)
            ts = NOW - dt.timedelta(days=ago)
            inst = rng.choice(install_ids)
            name = rng.choice(NAMES)
            day = ts.date()
            activity[(inst, day)] = activity.get((inst, day), 0) + 1
            daily[(day, name)] = daily.get((day, name), 0) + 1
            s = seen.setdefault(inst, [ts, ts, 0])
            s[0], s[1], s[2] = min(s[0], ts), max(s[1], ts), s[2] + 1
            yield (project.pk, None, inst, name, ts, ts, "", "1.0", "linux", "{}", "")

    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        copy_rows(
            raw,
            "telemetry_event",
            [
                "project_id",
                "event_id",
                "install_id",
                "name",
                "timestamp",
                "received_at",
                "session_id",
                "app_version",
                "os",
                "properties",
                "ip_hash",
            ],
            event_rows(),
        )
        copy_rows(
            raw,
            "telemetry_dailyactivity",
            ["project_id", "install_id", "day", "events", "app_version", "os"],
            ((project.pk, i, d, n, "1.0", "linux") for (i, d), n in activity.items()),
        )
        copy_rows(
            raw,
            "telemetry_install",
            [
                "project_id",
                "install_id",
                "first_seen",
                "last_seen",
                "first_version",
                "last_version",
                "os",
                "event_count",
            ],
            ((project.pk, i, a, b, "1.0", "1.0", "linux", n) for i, (a, b, n) in seen.items()),
        )
        if counts:
            copy_rows(
                raw,
                "telemetry_dailycount",
                ["project_id", "day", "name", "events"],
                ((project.pk, d, name, n) for (d, name), n in daily.items()),
            )


def sizes() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        out = {}
        for table in TABLES:
            cursor.execute("SELECT pg_total_relation_size(%s)", [table])
            out[table] = cursor.fetchone()[0]
        return out


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"VACUUM (ANALYZE) {table}")


def ingest_role(stop_file: str, out_file: str) -> None:
    """Ingest one event at a time through the real pipeline until stop_file appears."""
    setup_django()
    from django.utils import timezone

    from telemetry.ingest.pipeline import ingest
    from telemetry.ingest.schema import IncomingEvent
    from telemetry.models import Project

    project = Project.objects.get(slug=SLUG)
    samples = []
    n = 0
    while not os.path.exists(stop_file) and n < 200_000:
        n += 1
        event = IncomingEvent(
            install_id=f"live_{os.getpid()}_{n % 500:05d}",
            name="app.start",
            timestamp=timezone.now(),
        )
        t0 = time.time()
        ingest(project=project, events=[event], client_ip="192.0.2.77")
        samples.append((t0, time.time() - t0))
    Path(out_file).write_text(json.dumps(samples))


def run_ingest(during) -> list[tuple[float, float]]:
    """Run the ingest loop in a subprocess around `during()`; returns (start, latency) pairs."""
    tmp = Path(tempfile.mkdtemp(prefix="tm-bench-purge-"))
    stop, out = tmp / "stop", tmp / "latencies.json"
    child = subprocess.Popen(
        [sys.executable, __file__, "--role", "ingest", "--stop", str(stop), "--out", str(out)]
    )
    try:
        time.sleep(2.0)  # let it start and warm up
        during()
        time.sleep(0.5)
    finally:
        stop.touch()
        child.wait(60)
    return json.loads(out.read_text())


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=2_000)
    parser.add_argument("--pause", type=float, default=0.05, help="Seconds between batches.")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--baseline-seconds", type=float, default=6.0)
    parser.add_argument("--role", default="main", choices=["main", "ingest"])
    parser.add_argument("--stop")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.role == "ingest":
        ingest_role(args.stop, args.out)
        return

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("bench/purge.py measures PostgreSQL: set DATABASE_URL=postgres://…/tm_bench_purge")
    ensure_database(url)
    setup_django()
    from django.core.management import call_command
    from django.db import connection

    from telemetry.models import Project
    from telemetry.services import purge
    from telemetry.services.projects import create_project

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE telemetry_event, telemetry_dailyactivity, telemetry_install,"
            " telemetry_dailycount, telemetry_dailysummary, telemetry_cohortsummary"
        )
    project = (
        Project.objects.filter(slug=SLUG).first()
        or create_project(
            slug=SLUG, retention_days=90, install_rate="1000000/h", ip_rate="1000000/h"
        ).project
    )

    t0 = time.monotonic()
    load(project, events=args.events, first_day=0, last_day=120, tag="c0", counts=True)
    vacuum()
    print(f"loaded {args.events} events over 120 days in {time.monotonic() - t0:.1f}s")
    print(f"size before purge: {sizes()}")

    baseline = run_ingest(lambda: time.sleep(args.baseline_seconds))
    window: dict[str, float] = {}

    def purge_now():
        window["start"] = time.time()
        window["result"] = purge.purge(now=NOW, batch_size=args.batch_size, pause=args.pause)[
            0
        ].deleted
        window["end"] = time.time()

    during = run_ingest(purge_now)
    in_purge = [lat for start, lat in during if window["start"] <= start <= window["end"]]
    base = [lat for _, lat in baseline]
    report = {
        "events": args.events,
        "batch_size": args.batch_size,
        "pause": args.pause,
        "purge_seconds": round(window["end"] - window["start"], 2),
        "deleted": window["result"],
        "ingest_p99_ms_without_purge": round(p99(base) * 1000, 2),
        "ingest_p99_ms_during_purge": round(p99(in_purge) * 1000, 2),
        "ingest_samples": [len(base), len(in_purge)],
    }
    report["p99_ratio"] = round(
        report["ingest_p99_ms_during_purge"] / report["ingest_p99_ms_without_purge"], 2
    )
    vacuum()
    cycle_sizes = [sum(sizes().values())]
    for cycle in range(1, args.cycles):
        # Refill the expired month, purge it again, VACUUM: space is reused, not added.
        load(
            project,
            events=args.events // 4,
            first_day=91,
            last_day=120,
            tag=f"c{cycle}",
            counts=False,
        )
        purge.purge(now=NOW, batch_size=args.batch_size)
        vacuum()
        cycle_sizes.append(sum(sizes().values()))
    report["size_after_each_cycle_bytes"] = cycle_sizes
    report["size_growth_last_vs_first"] = round(cycle_sizes[-1] / cycle_sizes[0], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
