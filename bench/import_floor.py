"""The least PostgreSQL work any importer of 1M events does: the rows, already mapped, copied
into telemetry_event's day partitions with their indexes. No reading, mapping, dedupe or
rollups: a floor to set issue 14's 50,000 rows/s (40 µs of CPU a row on two cores) against.

    .venv/bin/python bench/import_floor.py [--rows 1000000] [--days 84] [--mode attach,rowwise]
        [--rollups]

- `attach`: per day a plain table, COPY, then ATTACH PARTITION (which builds the parent's
  seven indexes on it, one sorted pass each): the import's way for days with no partition;
- `rowwise`: per day a partition first, then COPY through the parent (indexes kept row by row).

With `--rollups`, the `attach` mode then also times what an import must do after the floor:
the days' exact rollups, folded by the import's own statement (`pipeline.fold_new_days`) in
groups of `pipeline.ATTACH_ROWS` rows, and ANALYZE of every day table.

Rows are VoiceMode-shaped (seven properties), one project, `--days` UTC days. Its own database
(tm_bench_import_floor), migrated, dropped at the end; CPU of the connection's backend from
/proc. Prints one JSON line per mode.
"""

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DB = "tm_bench_import_floor"
PG = "postgresql://postgres@127.0.0.1:5432"
os.environ.setdefault("DATA_DIR", "/tmp/tm-bench-import-floor")
sys.path.insert(0, str(ROOT / "bench"))

from import_events import cpu_seconds, recreate_database  # noqa: E402 (bench/ on the path)

COLUMNS = (
    "project_id, event_id, install_id, name, timestamp, received_at, session_id, app_version,"
    " os, properties, ip_hash"
)


def day_rows(rows: int, days: int, start: dt.datetime) -> dict[int, bytes]:
    """COPY text of `rows` events spread over `days` days, by day."""
    rnd = random.Random(1)
    lines: dict[int, list[str]] = {}
    for i in range(rows):
        day = i % days
        ts = start + dt.timedelta(days=day, seconds=rnd.randrange(86_400))
        props = json.dumps(
            {
                "event_type": "tts_request",
                "provider": "openai",
                "duration_ms": rnd.randrange(5000),
                "success": True,
                "model": "tts-1",
                "voice": "alloy",
                "text_length": rnd.randrange(500),
            }
        )
        lines.setdefault(day, []).append(
            f"1\tevt{i:012d}\tinst{i % 40_000:08d}\tvoice.tts\t{ts.isoformat()}"
            f"\t2026-12-06T00:00:00+00:00\t\t1.2.{i % 7}\tlinux\t{props}\t\n"
        )
    return {day: "".join(text).encode() for day, text in lines.items()}


def recreate() -> None:
    recreate_database(f"{PG}/{DB}")
    # import_events set SECRET_KEY (and DATA_DIR, unless given) for its own Django set-up.
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], check=True, env=env, cwd=ROOT)


def run(mode: str, data: dict[int, bytes], start: dt.datetime, *, rollups: bool = False) -> dict:
    recreate()
    with psycopg.connect(f"{PG}/{DB}", autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("CHECKPOINT")
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        for day, blob in sorted(data.items()):
            low = start + dt.timedelta(days=day)
            high = low + dt.timedelta(days=1)
            bounds = f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
            name = f"telemetry_event_p{low:%Y%m%d}"  # the partition's name, as an import's
            with conn.transaction():
                if mode == "attach":
                    conn.execute(f"CREATE TABLE {name} (LIKE telemetry_event INCLUDING DEFAULTS)")
                    # As the import's tables (partitions.skip_statistics): ANALYZE skips it.
                    conn.execute(f"ALTER TABLE {name} ALTER COLUMN properties SET STATISTICS 0")
                    conn.execute(
                        f"ALTER TABLE {name} ADD CONSTRAINT {name}_bounds CHECK"
                        f" (timestamp >= '{low.isoformat()}' AND timestamp < '{high.isoformat()}')"
                    )
                    with conn.cursor().copy(f"COPY {name} ({COLUMNS}) FROM STDIN") as copy:
                        copy.write(blob)
                    conn.execute(f"ALTER TABLE telemetry_event ATTACH PARTITION {name} {bounds}")
                else:
                    conn.execute(f"CREATE TABLE {name} PARTITION OF telemetry_event {bounds}")
                    with conn.cursor().copy(f"COPY telemetry_event ({COLUMNS}) FROM STDIN") as copy:
                        copy.write(blob)
        cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - wall0
        rows = conn.execute("SELECT count(*) FROM telemetry_event").fetchone()[0]
    result = {
        "mode": mode,
        "rows": rows,
        "wall_seconds": round(wall, 2),
        "backend_cpu_seconds": round(cpu, 2),
        "backend_cpu_us_per_row": round(cpu * 1e6 / rows, 1),
        "rows_per_second": round(rows / wall),
    }
    if rollups and mode == "attach":
        result |= after_floor(data, start, rows)
    return result


def after_floor(data: dict[int, bytes], start: dt.datetime, rows: int) -> dict:
    """Backend CPU a row of the days' rollups (the import's statement, its groups) and of
    ANALYZE of every day table, through Django on the floor's database."""
    import django

    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB}"
    django.setup()
    from django.db import connection, transaction

    from telemetry.ingest import pipeline
    from telemetry.services import partitions
    from telemetry.services.projects import create_project

    assert create_project(slug="bench-floor", contract="voicemode").project.pk == 1  # the rows'
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    counts = {(start + dt.timedelta(days=d)).date(): blob.count(b"\n") for d, blob in data.items()}
    cpu0 = cpu_seconds(pid)
    group: list[dt.date] = []
    for day in sorted(counts):
        group.append(day)
        if sum(counts[d] for d in group) >= pipeline.ATTACH_ROWS or day == max(counts):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL work_mem = '{pipeline.ATTACH_WORK_MEM}'")
                pipeline.fold_new_days(cursor, group)
            group = []
    folded = cpu_seconds(pid) - cpu0
    tables = [
        *partitions.existing().values(),
        *partitions.existing(parent=partitions.ACTIVITY).values(),
    ]
    cpu0 = cpu_seconds(pid)
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {table}")
    analyzed = cpu_seconds(pid) - cpu0
    connection.close()
    return {
        "rollups_cpu_us_per_row": round(folded * 1e6 / rows, 1),
        "analyze_cpu_us_per_row": round(analyzed * 1e6 / rows, 1),
        "analyzed_tables": len(tables),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=84)
    parser.add_argument("--mode", default="attach,rowwise")
    parser.add_argument(
        "--rollups", action="store_true", help="after `attach`, time the rollups and ANALYZE too"
    )
    args = parser.parse_args()
    if not 1_000 <= args.rows <= 5_000_000 or not 1 <= args.days <= 365:
        parser.error("--rows in 1,000..5,000,000, --days in 1..365")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    data = day_rows(args.rows, args.days, start)
    try:
        for mode in args.mode.split(","):
            print(
                json.dumps(
                    {
                        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                        **run(mode, data, start, rollups=args.rollups),
                    }
                ),
                flush=True,
            )
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    main()
