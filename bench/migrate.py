"""How long migration 0003 (plain events → daily partitions) takes on an existing database.

    .venv/bin/python bench/migrate.py [--events 10000000] [--days 180]

Creates the database tm_bench_migrate at migration 0002, fills telemetry_event with N rows over
the last D days by one INSERT … SELECT, then times `manage.py migrate telemetry 0003` and checks
that every row arrived (count, id sum and a checksum of every column). PostgreSQL only.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
NAME = "tm_bench_migrate"
URL = f"postgresql://postgres@127.0.0.1:5432/{NAME}"
CHECK = (
    "SELECT count(*), sum(id), sum(hashtext(concat_ws('|', project_id, event_id, install_id,"
    " name, timestamp, received_at, session_id, app_version, os, properties::text, ip_hash)))"
    " FROM telemetry_event"
)


def manage(*args: str) -> float:
    env = dict(
        os.environ,
        DATABASE_URL=URL,
        SECRET_KEY="bench-only",
        DATA_DIR=str(ROOT / "data" / "bench-migrate"),
        LOG_LEVEL="WARNING",
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=180)
    args = parser.parse_args()
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {NAME}")
    manage("migrate", "-v0")
    manage("migrate", "telemetry", "0002", "-v0")
    with psycopg.connect(URL, autocommit=True) as c:
        project = c.execute(
            "INSERT INTO telemetry_project (slug, name, contract, hostnames,"
            " operator_token_hash, retention_days, install_rate, ip_rate, allowed_origins,"
            " property_schema, strict, redact_pii, public_page, created_at) VALUES"
            " ('bench-migrate', 'Bench', 'native', '[]', '', 365, '10/h', '10/h', '[]', '{}',"
            " false, false, false, now()) RETURNING id"
        ).fetchone()[0]
        started = time.monotonic()
        c.execute(
            "INSERT INTO telemetry_event (project_id, event_id, install_id, name, timestamp,"
            " received_at, session_id, app_version, os, properties, ip_hash)"
            " SELECT %s, CASE WHEN mod(g, 3) > 0 THEN 'evt_' || g END, 'inst_' || mod(g, 100000),"
            " (ARRAY['app.start','cmd.run','app.crash'])[mod(g, 3) + 1],"
            " now() - make_interval(secs => (g::float8 / %s) * %s * 86400),"
            " now(), '', '1.' || mod(g, 7), 'linux', jsonb_build_object('n', mod(g, 50)), 'h'"
            " FROM generate_series(1, %s) g",
            [project, args.events, args.days, args.events],
        )
        c.execute("VACUUM ANALYZE telemetry_event")
        loaded = time.monotonic() - started
        before = c.execute(CHECK).fetchone()
        size = c.execute("SELECT pg_total_relation_size('telemetry_event')").fetchone()[0]
    seconds = manage("migrate", "telemetry", "0003", "-v0")
    with psycopg.connect(URL) as c:
        after = c.execute(CHECK).fetchone()
        parts = c.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry_event'::regclass"
        ).fetchone()[0]
    print(
        json.dumps(
            {
                "events": args.events,
                "days": args.days,
                "load_seconds": round(loaded, 1),
                "table_mb_before": round(size / 2**20),
                "migrate_0003_seconds": round(seconds, 1),
                "partitions": parts,
                "rows_equal": before == after,
                "before": [str(v) for v in before],
                "after": [str(v) for v in after],
            },
            indent=2,
        )
    )
    if before != after:
        sys.exit("rows differ after the migration")


if __name__ == "__main__":
    main()
