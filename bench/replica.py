"""Ingest p99 with and without a dashboard user, on a private primary + streaming replica pair.

Starts its own PostgreSQL pair the way tests/replica.py does (initdb in a temp folder,
pg_basebackup -R, free loopback ports, run as the postgres user; the machine's own cluster is
left alone), migrates and seeds the primary, and runs the platform under gunicorn with
DATABASE_URL (primary) and DATABASE_REPLICA_URL (replica). Then, in alternating rounds, wrk
drives single-event native ingest (bench/ingest.lua) for --seconds alone ("without"), and again
while one logged-in dashboard user clicks through every dashboard page in a loop ("with"),
bounded by --max-clicks and the round's time. Target (issue 11): the p99 of ingest with the
dashboard user ≤ 1.2x the p99 without. Also reports each page's median and p90 time and how many
rows the replica and the primary returned while the user clicked (where the reads went).

    python bench/replica.py [--rounds 3] [--seconds 15] [--connections 8] [--events 300000]
                            [--installs 5000] [--days 30] [--workers 4] [--max-clicks 2000]

Loopback only; every load loop is bounded in count and time; stops only what it started.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness
import psycopg
import requests

ROOT = harness.ROOT
sys.path.insert(0, str(ROOT))
from tests.replica import PgPair, as_postgres, binaries  # noqa: E402

PORTS = range(18301, 18400)
SCRIPT = ROOT / "bench" / "ingest.lua"
SLUG = "bench-replica"
REDIS = "redis://127.0.0.1:6379/11"
PAGES = [
    "/dashboard/{slug}/",
    "/dashboard/{slug}/retention/",
    "/dashboard/{slug}/breakdown/",
    "/dashboard/{slug}/breakdown/?property=os&metric=installs",
    "/dashboard/{slug}/errors/",
    "/dashboard/{slug}/events/",
    "/dashboard/{slug}/setup/",
]


def env_for(pair: PgPair, data_dir: Path, replica: bool) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=pair.primary_url,
        REDIS_URL=REDIS,
        SECRET_KEY="bench-only-secret",
        SECURE_SSL_REDIRECT="0",
        # Plain HTTP on loopback: the login's cookies must come back without TLS.
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        TRUSTED_PROXIES="127.0.0.1/32",
        DATA_DIR=str(data_dir),
        LOG_LEVEL="WARNING",
        ACCESS_LOG="",
        PYTHONPATH=str(ROOT / "bench"),
    )
    env.pop("CELERY_BROKER_URL", None)
    if replica:
        env["DATABASE_REPLICA_URL"] = pair.replica_url
    return env


def manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [harness.PY, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    ).stdout


def returned(url: str) -> int:
    """Rows returned by the `telemetry` database of one server so far (pg_stat_database)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as c:
        return c.execute(
            "SELECT tup_returned + tup_fetched FROM pg_stat_database WHERE datname = 'telemetry'"
        ).fetchone()[0]


def login(port: int, username: str, password: str) -> requests.Session:
    s = requests.Session()
    base = f"http://127.0.0.1:{port}"
    s.get(f"{base}/accounts/login/", timeout=30)
    r = s.post(
        f"{base}/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": s.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=30,
        allow_redirects=False,
    )
    if r.status_code != 302:
        raise SystemExit(f"dashboard login failed: {r.status_code}")
    return s


class Clicker(threading.Thread):
    """One dashboard user: every page in turn, back to back, until stopped or max clicks."""

    def __init__(self, session: requests.Session, port: int, max_clicks: int) -> None:
        super().__init__(daemon=True)
        self.session, self.port, self.max_clicks = session, port, max_clicks
        self.stop_at = time.monotonic() + 3600
        self.times: dict[str, list[float]] = {p: [] for p in PAGES}
        self.errors: list[str] = []

    def run(self) -> None:
        clicks = 0
        while time.monotonic() < self.stop_at and clicks < self.max_clicks:
            for page in PAGES:
                if time.monotonic() >= self.stop_at or clicks >= self.max_clicks:
                    return
                t0 = time.perf_counter()
                r = self.session.get(
                    f"http://127.0.0.1:{self.port}{page.format(slug=SLUG)}", timeout=30
                )
                self.times[page].append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    self.errors.append(f"{page} {r.status_code}")
                clicks += 1


def ingest_round(port: int, key: str, tag: str, seconds: int, connections: int) -> dict:
    env = {
        "BENCH_DOOR": "native",
        "BENCH_PATH": "/api/v1/events",
        "BENCH_KEY": key,
        "BENCH_RUN": tag,
        "BENCH_RUN_HEX": "00000000",
    }
    return harness.run_wrk(
        f"http://127.0.0.1:{port}/api/v1/events",
        script=SCRIPT,
        env=env,
        seconds=seconds,
        connections=connections,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--installs", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-clicks", type=int, default=2_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 10 and 1 <= args.seconds <= 120):
        parser.error("--rounds 1..10 and --seconds 1..120")
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    if binaries() is None or as_postgres() is None:
        sys.exit("needs PostgreSQL's initdb and to run it as the postgres user")

    data_dir = Path(tempfile.mkdtemp(prefix="tm-bench-replica-"))
    pair = PgPair().start()
    server = None
    try:
        env = env_for(pair, data_dir, replica=True)
        print(f"pair up: primary :{pair.primary_port}, replica :{pair.replica_port}")
        manage(env, "migrate", "-v0")
        manage(env, "collectstatic", "--noinput", "-v0")
        project = json.loads(
            manage(
                env,
                "create_project",
                SLUG,
                "--install-rate",
                "1000000/h",
                "--ip-rate",
                "100000000/h",
                "--json",
            )
        )
        t0 = time.perf_counter()
        manage(
            env,
            "seed_demo",
            SLUG,
            "--installs",
            str(args.installs),
            "--events",
            str(args.events),
            "--days",
            str(args.days),
            "--replace",
            "--json",
        )
        print(f"seeded {args.events:,} events in {time.perf_counter() - t0:.0f} s")
        password = "bench-only-password"
        manage(
            {**env, "DJANGO_SUPERUSER_PASSWORD": password},
            "createsuperuser",
            "--noinput",
            "--username",
            "bench-admin",
            "--email",
            "bench@example.invalid",
        )
        pair.wait_replayed(timeout=120)
        port = harness.free_port(PORTS)
        server = harness.start_server(
            harness.gunicorn_cmd("config.wsgi:application", port, args.workers),
            env=env,
            port=port,
        )
        session = login(port, "bench-admin", password)
        for page in PAGES:  # every page once, warm, and proof that each answers
            r = session.get(f"http://127.0.0.1:{port}{page.format(slug=SLUG)}", timeout=60)
            if r.status_code != 200:
                raise SystemExit(f"{page} answered {r.status_code}")
        ingest_round(port, project["ingest_key"], "warm", 3, args.connections)

        rounds = []
        for n in range(args.rounds):
            alone = ingest_round(
                port, project["ingest_key"], f"a{n}", args.seconds, args.connections
            )
            clicker = Clicker(session, port, args.max_clicks)
            clicker.stop_at = time.monotonic() + args.seconds + 5
            before = {"replica": returned(pair.replica_url), "primary": returned(pair.primary_url)}
            clicker.start()
            time.sleep(0.5)  # the user is on a page before the load starts
            busy = ingest_round(
                port, project["ingest_key"], f"b{n}", args.seconds, args.connections
            )
            clicker.stop_at = time.monotonic()
            clicker.join(timeout=60)
            after = {"replica": returned(pair.replica_url), "primary": returned(pair.primary_url)}
            rounds.append(
                {
                    "without": alone,
                    "with": busy,
                    "clicks": sum(len(t) for t in clicker.times.values()),
                    "page_ms": clicker.times,
                    "errors": clicker.errors,
                    "rows_returned": {k: after[k] - before[k] for k in after},
                }
            )
            print(
                f"round {n + 1}: p99 without {alone['p99_ms']:.1f} ms ({alone['rps']:.0f} rps),"
                f" with {busy['p99_ms']:.1f} ms ({busy['rps']:.0f} rps),"
                f" {rounds[-1]['clicks']} page views, rows returned"
                f" replica {rounds[-1]['rows_returned']['replica']:,}"
                f" primary {rounds[-1]['rows_returned']['primary']:,}"
            )
    finally:
        if server is not None:
            harness.stop(server)
        pair.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    p99_without = statistics.median(r["without"]["p99_ms"] for r in rounds)
    p99_with = statistics.median(r["with"]["p99_ms"] for r in rounds)
    pages = {}
    for page in PAGES:
        samples = sorted(t for r in rounds for t in r["page_ms"][page])
        if samples:
            pages[page] = {
                "views": len(samples),
                "median_ms": round(statistics.median(samples), 1),
                "p90_ms": round(samples[math.ceil(0.9 * len(samples)) - 1], 1),
            }
    summary = {
        "p99_without_ms": round(p99_without, 1),
        "p99_with_ms": round(p99_with, 1),
        "ratio": round(p99_with / p99_without, 2),
        "rps_without": round(statistics.median(r["without"]["rps"] for r in rounds)),
        "rps_with": round(statistics.median(r["with"]["rps"] for r in rounds)),
        "non_2xx": sum(r["without"]["non_2xx"] + r["with"]["non_2xx"] for r in rounds),
        "page_errors": [e for r in rounds for e in r["errors"]],
        "pages": pages,
        "rows_returned": [r["rows_returned"] for r in rounds],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"\ningest p99 without the dashboard user {p99_without:.1f} ms, with"
            f" {p99_with:.1f} ms: {summary['ratio']}x (target ≤ 1.2x)"
        )
        for page, s in pages.items():
            print(
                f"  {page:<60} {s['views']:4d} views  median {s['median_ms']:7.1f}"
                f" ms  p90 {s['p90_ms']:7.1f} ms"
            )
        print(
            f"  non-2xx ingest answers: {summary['non_2xx']}; page errors: "
            f"{len(summary['page_errors'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
