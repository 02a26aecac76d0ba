"""The rollup fold's cost per queued event, on PostgreSQL: what the beat job spends on every
stored event after ingest has queued it.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tm_bench_fold \
        .venv/bin/python bench/fold.py [--events 50000] [--per-day 1,10,40] [--rounds 3]

For each --per-day value (events per install and day: one for a tool that reports once a
day, dozens for a CLI run many times a day), --events queue rows are written straight into the
queue for a new project (as ingest's statement writes them: an install, a name, a time over
the last 30 days, a version and a system, some of them empty), then `fold_rollups()` folds
them; wall time and the PostgreSQL backend's CPU are divided by the events. Each round uses
new installs, so every fold inserts its rollup rows instead of updating earlier ones. The
database is recreated (it must be one this benchmark may drop); nothing else is started.
"""

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("DATA_DIR", "/tmp/tm-bench-fold")

from import_events import cpu_seconds, recreate_database  # noqa: E402 (bench/ on the path)

# The queue rows of `n` events of `installs` installs spread over `days` days before now.
QUEUE_ROWS = """
INSERT INTO telemetry_rollupqueue (project_id, install_id, name, timestamp, app_version, os)
SELECT %(project)s,
    %(tag)s || (g %% %(installs)s)::text,
    CASE WHEN g %% 7 = 0 THEN 'cmd.run' ELSE 'app.start' END,
    now() - ((g / %(installs)s) %% %(days)s) * interval '1 day' - (g %% 86000) * interval '1 s',
    CASE WHEN g %% 5 = 0 THEN '' ELSE '1.' || (g %% 3)::text END,
    CASE WHEN g %% 11 = 0 THEN '' ELSE 'linux' END
FROM generate_series(0, %(n)s - 1) AS g
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--per-day", default="1,10,40", help="events per install and day")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("set DATABASE_URL to a PostgreSQL database this benchmark may drop")
    recreate_database(url)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from telemetry.ingest.rollups import fold_rollups
    from telemetry.services import partitions
    from telemetry.services.projects import create_project

    call_command("migrate", verbosity=0)
    project = create_project(slug="bench-fold", install_rate="1/h", ip_rate="1/h").project
    today = dt.datetime.now(dt.UTC).date()
    partitions.ensure_range(start=today - dt.timedelta(days=args.days + 1), end=today)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    results = []
    for per_day in [int(x) for x in args.per_day.split(",")]:
        # Each install sends `per_day` events on each of the days it is seen.
        installs = max(1, args.events // (per_day * args.days))
        for rnd in range(args.rounds):
            with connection.cursor() as cursor:
                cursor.execute(
                    QUEUE_ROWS,
                    {
                        "project": project.pk,
                        "tag": f"i{per_day}r{rnd}_",
                        "installs": installs,
                        "days": args.days,
                        "n": args.events,
                    },
                )
            cpu0, t0 = cpu_seconds(backend), time.perf_counter()
            folded = fold_rollups()
            wall, cpu = time.perf_counter() - t0, cpu_seconds(backend) - cpu0
            results.append(
                {
                    "per_day": per_day,
                    "round": rnd,
                    "folded": folded,
                    "wall_s": round(wall, 3),
                    "us_per_event": round(wall / folded * 1e6, 2),
                    "pg_cpu_us_per_event": round(cpu / folded * 1e6, 2),
                }
            )
            print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
