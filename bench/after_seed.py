"""Right after seed_demo, with no manual step: every analytics page and API on PostgreSQL, and
WAU (12 weeks) + 12x12 weekly retention against DuckDB computing them from the raw events in
memory.

Creates a fresh database, migrates, runs `manage.py seed_demo` as a new user would, then times
(server time, Django test client, DEBUG=0) the first request and the median of warm ones:

    python bench/after_seed.py --events 2000000 --installs 20000 [--runs 5]
        [--database-url postgres://postgres@127.0.0.1:5432/tm_bench_after_seed]

Needs `pip install -r bench/requirements.txt` (duckdb). Targets (issue 11): API WAU + retention
≤ 0.5x DuckDB's time for the same numbers, and the numbers equal.
"""

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLUG = "after-seed"

DUCK_WAU = """
SELECT date_trunc('week', ts)::DATE AS w, COUNT(DISTINCT install_id) AS n
FROM ev WHERE ts >= $start GROUP BY 1 ORDER BY 1
"""
DUCK_RETENTION = """
WITH first AS (
  SELECT install_id, date_trunc('week', MIN(ts))::DATE AS c FROM ev GROUP BY install_id
), weeks AS (
  SELECT DISTINCT install_id, date_trunc('week', ts)::DATE AS w FROM ev WHERE ts >= $start
)
SELECT f.c, w.w, COUNT(*) FROM first f JOIN weeks w USING (install_id)
WHERE f.c >= $start GROUP BY 1, 2
"""


def timed(fn, runs: int) -> tuple[float, float]:
    """(first call ms, median of `runs` further calls ms)."""
    t0 = time.perf_counter()
    fn()
    first = (time.perf_counter() - t0) * 1000
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return first, statistics.median(samples)


def fresh_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--installs", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/tm_bench_after_seed"
    )
    args = parser.parse_args()

    fresh_database(args.database_url)
    data_dir = tempfile.mkdtemp(prefix="tm-bench-after-seed-")
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "DATA_DIR": data_dir,
        "SECRET_KEY": "bench-only",
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "testserver,127.0.0.1",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            *manage,
            *("seed_demo", SLUG, "--installs", str(args.installs), "--events", str(args.events)),
            *("--days", str(args.days), "--json"),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    seed_seconds = time.perf_counter() - t0
    seeded = json.loads(out.stdout)

    os.environ.update({k: env[k] for k in ("DATABASE_URL", "DATA_DIR", "SECRET_KEY", "DEBUG")})
    os.environ.update(
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="testserver,127.0.0.1",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import duckdb
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from telemetry.models import Project

    project = Project.objects.get(slug=SLUG)
    token = seeded["operator_token"]
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    admin = get_user_model().objects.create_superuser("bench-admin", password=None)
    pages = Client()
    pages.force_login(admin)
    now = timezone.now()
    today = now.date()
    week0 = today - dt.timedelta(days=today.weekday()) - dt.timedelta(weeks=11)
    base = f"/api/v1/projects/{SLUG}"

    def get(client, url, params=None):
        r = client.get(url, params or {})
        assert r.status_code == 200, (url, r.status_code, r.content[:300])
        return r

    answers = {}

    def wau_and_retention():
        answers["wau"] = get(api, f"{base}/active", {"interval": "week", "start": str(week0)})
        answers["ret"] = get(api, f"{base}/retention", {"period": "week", "cohorts": "12"})

    # The very first request after seeding is the one the issue measured (10.5 s at 300k).
    targets = {
        "API: WAU 12 weeks + 12x12 retention": lambda: wau_and_retention(),
        "page: overview": lambda: get(pages, f"/dashboard/{SLUG}/"),
        "page: retention": lambda: get(pages, f"/dashboard/{SLUG}/retention/"),
        "page: breakdown (default)": lambda: get(pages, f"/dashboard/{SLUG}/breakdown/"),
        "page: breakdown OS by installs": lambda: get(
            pages, f"/dashboard/{SLUG}/breakdown/", {"property": "os", "metric": "installs"}
        ),
        "page: errors": lambda: get(pages, f"/dashboard/{SLUG}/errors/"),
        "page: events explorer": lambda: get(pages, f"/dashboard/{SLUG}/events/"),
        "admin: Events list": lambda: get(pages, "/admin/telemetry/event/"),
        "admin: Events list page 2,000": lambda: get(
            pages, "/admin/telemetry/event/", {"p": "2000"}
        ),
        "admin: project page (WAU + retention)": lambda: get(
            pages, f"/admin/telemetry/project/{project.pk}/change/"
        ),
        "API: retention ?period=week&cohorts=12": lambda: get(
            api, f"{base}/retention", {"period": "week", "cohorts": "12"}
        ),
    }
    results = {name: timed(fn, args.runs) for name, fn in targets.items()}

    # DuckDB: the raw (install, timestamp) pairs in memory, then the same two answers.
    with tempfile.NamedTemporaryFile(suffix=".csv", dir=data_dir) as csv:
        with connection.cursor() as cursor, open(csv.name, "wb") as f:
            copy_sql = (
                "COPY (SELECT install_id, timestamp AT TIME ZONE 'UTC' FROM telemetry_event"
                f" WHERE project_id = {project.pk}) TO STDOUT WITH (FORMAT csv)"
            )
            with cursor.cursor.copy(copy_sql) as copy:
                for block in copy:
                    f.write(block)
        duck = duckdb.connect()
        duck.execute(
            "CREATE TABLE ev AS SELECT * FROM read_csv(?, header=false,"
            " columns={'install_id': 'VARCHAR', 'ts': 'TIMESTAMP'})",
            [csv.name],
        )
    params = {"start": dt.datetime.combine(week0, dt.time.min)}

    def duck_both():
        answers["duck_wau"] = duck.execute(DUCK_WAU, params).fetchall()
        answers["duck_ret"] = duck.execute(DUCK_RETENTION, params).fetchall()

    duck_first, duck_ms = timed(duck_both, args.runs)

    # Equal numbers: WAU per week and every retention cell.
    ours_wau = [p["active_installs"] for p in json.loads(answers["wau"].content)["series"]]
    duck_wau = [n for _, n in answers["duck_wau"]]
    cells = {}
    for c in json.loads(answers["ret"].content)["cohorts"]:
        year, week = c["cohort"].split("-W")
        start = dt.date.fromisocalendar(int(year), int(week), 1)
        for k, n in enumerate(c["retained"]):
            if n:
                cells[(start, start + dt.timedelta(weeks=k))] = n
    duck_cells = {(c, w): n for c, w, n in answers["duck_ret"]}
    equal = ours_wau == duck_wau and cells == duck_cells

    api_ms = results["API: WAU 12 weeks + 12x12 retention"][1]
    report = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "events": seeded["events"],
        "installs": seeded["installs"],
        "seed_seconds": round(seed_seconds, 1),
        "first_and_median_ms": {k: [round(a, 1), round(b, 1)] for k, (a, b) in results.items()},
        "duckdb_wau_and_retention_ms": [round(duck_first, 1), round(duck_ms, 1)],
        "ratio_api_to_duckdb": round(api_ms / duck_ms, 3),
        "numbers_equal": equal,
    }
    print(json.dumps(report, indent=2))
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
