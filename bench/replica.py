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

--topology picks where things run:
  shared  one gunicorn (--workers) serves ingest and the dashboard user; every process may run
          on every CPU (one host holding everything).
  split   two hosts modelled on CPUs 0 and 1: the primary cluster, the ingest gunicorn
          (--workers) and wrk on CPU 0; the replica cluster, a dashboard gunicorn of its own
          (--dashboard-workers, same code and env) and the clicking user on CPU 1. Both rounds
          ("without" and "with") use this placement, so the ratio compares like with like.
  both    shared and split in turn within each round, on the same pair and data.
The platform's jobs run as deployed (Procfile: a Celery worker and beat, on the embedded
broker), in both phases: the rollup fold every 10 s and the one-minute refresh (--no-jobs
leaves them out, as the bench ran in sessions 5-8). The jobs run with the primary: on CPU 0 in
split. So does a
redis-server of the bench's own (unless --redis-url): the machine's shared one is unpinned, so
it ran on CPU 1 while that was idle and on CPU 0 once the dashboard user kept CPU 1 busy, a
cost the "with" phase alone paid.
The running clusters and the ingest gunicorn are moved between placements with
sched_setaffinity (leader first, so later backends and workers inherit it); the dashboard
gunicorn and wrk start under taskset. After every split round the bench checks that every
process of each tree is still on its CPU, and reports it. Each phase also reports every CPU's
busy, idle and stolen seconds, and how much of the busy time was the bench's processes' (the
trees and wrk) and how much everyone else's (the machine may be shared): over all CPUs, and in
split per CPU as well.

    python bench/replica.py [--topology shared|split|both] [--rounds 3] [--seconds 15]
                            [--connections 8] [--events 300000] [--installs 5000] [--days 30]
                            [--workers 4] [--dashboard-workers 2] [--max-clicks 2000]
                            [--redis-url URL] [--no-jobs] [--json]

Loopback only; every load loop is bounded in count and time; stops only what it started.
"""

import argparse
import json
import math
import os
import resource
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
import redis
import requests

ROOT = harness.ROOT
sys.path.insert(0, str(ROOT))
from tests.replica import PgPair, as_postgres, binaries  # noqa: E402

PORTS = range(18301, 18400)
SCRIPT = ROOT / "bench" / "ingest.lua"
SLUG = "bench-replica"
INGEST_CPU, DASHBOARD_CPU = 0, 1  # the two modelled hosts of --topology split
JOBS_SETTLE = 30  # seconds between starting the Celery worker and beat and the first round
PAGES = [
    "/dashboard/{slug}/",
    "/dashboard/{slug}/retention/",
    "/dashboard/{slug}/breakdown/",
    "/dashboard/{slug}/breakdown/?property=os&metric=installs",
    "/dashboard/{slug}/errors/",
    "/dashboard/{slug}/events/",
    "/dashboard/{slug}/setup/",
]


def env_for(pair: PgPair, data_dir: Path, replica: bool, redis_url: str) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=pair.primary_url,
        REDIS_URL=redis_url,
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


def start_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server of the bench's own on a free loopback port, keeping nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is needed, or --redis-url")
    port = harness.free_port(PORTS)
    cmd = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = harness.start([*cmd, "--dir", str(data_dir)], env=dict(os.environ))
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    for _ in range(50):
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.1)
    harness.stop(proc)
    sys.exit("the bench's redis-server did not answer")


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


def queued(url: str) -> int:
    """Rollup rows waiting for a fold on the primary: what no job or page has folded yet."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as c:
        return c.execute("SELECT count(*) FROM telemetry_rollupqueue").fetchone()[0]


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

    def __init__(
        self,
        session: requests.Session,
        port: int,
        max_clicks: int,
        cpus: set[int] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.session, self.port, self.max_clicks, self.cpus = session, port, max_clicks, cpus
        self.stop_at = time.monotonic() + 3600
        self.times: dict[str, list[float]] = {p: [] for p in PAGES}
        self.errors: list[str] = []

    def run(self) -> None:
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)  # pid 0: this thread only, not the bench
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


def ingest_round(
    port: int, key: str, tag: str, seconds: int, connections: int, cpus: set[int] | None = None
) -> dict:
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
        cpus=cpus,
    )


def postmaster(pair: PgPair, folder: str) -> int:
    """The postmaster's PID, first line of its data folder's postmaster.pid."""
    return int((pair.root / folder / "postmaster.pid").read_text().split()[0])


def place(trees: dict[str, tuple[int, set[int]]]) -> dict[str, int]:
    """Move each named process tree onto its CPUs; returns how many processes each has."""
    return {name: harness.pin_tree(pid, cpus) for name, (pid, cpus) in trees.items()}


def check_placement(trees: dict[str, tuple[int, set[int]]]) -> dict[str, dict]:
    """Each tree's process count and the PIDs not on its CPUs (backends forked mid-round)."""
    out = {}
    for name, (pid, cpus) in trees.items():
        total, wrong = harness.off_cpus(pid, cpus)
        out[name] = {"cpus": sorted(cpus), "processes": total, "off": wrong}
    return out


def snapshot(trees: dict[str, tuple[int, set[int]]]) -> dict:
    """CPU seconds so far: per CPU (busy, idle, steal), per process tree, wrk (our only child
    process that exits during a round) and this process ("user": the clicking thread, plus the
    main thread's little work between phases)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu": harness.cpu_times(),
        "trees": {name: harness.tree_cpu_seconds(pid) for name, (pid, _) in trees.items()},
        "wrk": ru.ru_utime + ru.ru_stime,
        "user": me.ru_utime + me.ru_stime,
    }


def cpu_used(
    before: dict, after: dict, trees: dict[str, tuple[int, set[int]]], per_cpu: bool
) -> dict:
    """Seconds each CPU spent busy, idle and stolen during a phase, and how much of the busy
    time was ours (the trees, wrk, the user) and how much everyone else's: over the whole machine
    ("all"), and per CPU when the trees are pinned (`per_cpu`: wrk on INGEST_CPU, the user on
    DASHBOARD_CPU)."""
    out = {}
    for cpu, t in after["cpu"].items():
        out[cpu] = {k: round(v - before["cpu"][cpu][k], 2) for k, v in t.items()}
    out["all"] = {
        k: round(sum(out[c][k] for c in after["cpu"]), 2) for k in ("busy", "idle", "steal")
    }
    trees_used = {n: after["trees"][n] - before["trees"][n] for n in trees}
    wrk, user = after["wrk"] - before["wrk"], after["user"] - before["user"]
    groups = {"all": {**trees_used, "wrk": wrk, "user": user}}
    if per_cpu:
        for cpu in after["cpu"]:
            mine = {n: v for n, v in trees_used.items() if trees[n][1] == {cpu}}
            if cpu == INGEST_CPU:
                mine["wrk"] = wrk
            if cpu == DASHBOARD_CPU:
                mine["user"] = user
            if mine:
                groups[cpu] = mine
    for key, mine in groups.items():
        out[key]["ours"] = {n: round(v, 2) for n, v in mine.items()}
        out[key]["others"] = round(out[key]["busy"] - sum(mine.values()), 2)
    return out


def cpu_line(label: str, cpu: dict) -> str:
    parts = []
    for n, u in cpu.items():
        ours = ", ".join(f"{k} {v:.1f}" for k, v in u.get("ours", {}).items())
        others = f", others {u['others']:.1f}" if "others" in u else ""
        name = "all CPUs" if n == "all" else f"CPU {n}"
        parts.append(
            f"{name} busy {u['busy']:.1f} idle {u['idle']:.1f} steal {u['steal']:.1f} s"
            + (f" ({ours}{others})" if ours else "")
        )
    return f"    {label}: " + "; ".join(parts)


def measure(
    *,
    topology: str,
    n: int,
    args: argparse.Namespace,
    key: str,
    session: requests.Session,
    pair: PgPair,
    ports: dict[str, int],
    trees: dict[str, dict[str, tuple[int, set[int]]]],
) -> dict:
    """One round in one topology: ingest alone, then ingest while the user clicks."""
    place(trees[topology])
    split = topology == "split"
    ingest_cpus = {INGEST_CPU} if split else None
    user_cpus = {DASHBOARD_CPU} if split else None
    port = ports["ingest"]
    page_port = ports["dashboard"] if split else port
    tag = topology[:2]
    placed_trees = trees[topology]
    s0 = snapshot(placed_trees)
    alone = ingest_round(port, key, f"{tag}a{n}", args.seconds, args.connections, ingest_cpus)
    s1 = snapshot(placed_trees)
    queue = {"after without": queued(pair.primary_url)}
    clicker = Clicker(session, page_port, args.max_clicks, user_cpus)
    clicker.stop_at = time.monotonic() + args.seconds + 5
    before = {"replica": returned(pair.replica_url), "primary": returned(pair.primary_url)}
    clicker.start()
    time.sleep(0.5)  # the user is on a page before the load starts
    s2 = snapshot(placed_trees)
    busy = ingest_round(port, key, f"{tag}b{n}", args.seconds, args.connections, ingest_cpus)
    s3 = snapshot(placed_trees)
    clicker.stop_at = time.monotonic()
    clicker.join(timeout=60)
    after = {"replica": returned(pair.replica_url), "primary": returned(pair.primary_url)}
    queue["after with"] = queued(pair.primary_url)
    result = {
        "topology": topology,
        "without": alone,
        "with": busy,
        "clicks": sum(len(t) for t in clicker.times.values()),
        "page_ms": clicker.times,
        "errors": clicker.errors,
        "rows_returned": {k: after[k] - before[k] for k in after},
        "queued": queue,
        "cpu": {
            "without": cpu_used(s0, s1, placed_trees, per_cpu=split),
            "with": cpu_used(s2, s3, placed_trees, per_cpu=split),
        },
    }
    placed = ""
    if split:
        result["placement"] = check_placement(trees[topology])
        placed = "; placement " + ", ".join(
            f"{name} {p['processes']} on CPU {p['cpus']}"
            + (f" ({len(p['off'])} off)" * bool(p["off"]))
            for name, p in result["placement"].items()
        )
    print(
        f"round {n + 1} {topology}: p99 without {alone['p99_ms']:.1f} ms ({alone['rps']:.0f} rps),"
        f" with {busy['p99_ms']:.1f} ms ({busy['rps']:.0f} rps),"
        f" {result['clicks']} page views, rows returned"
        f" replica {result['rows_returned']['replica']:,}"
        f" primary {result['rows_returned']['primary']:,}; rollup rows queued after each"
        f" phase {queue['after without']:,} / {queue['after with']:,}{placed}",
        flush=True,
    )
    for label in ("without", "with"):
        print(cpu_line(label, result["cpu"][label]), flush=True)
    return result


def summarize(rounds: list[dict]) -> dict:
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
    return {
        "p99_without_ms": round(p99_without, 1),
        "p99_with_ms": round(p99_with, 1),
        "ratio": round(p99_with / p99_without, 2),
        "rps_without": round(statistics.median(r["without"]["rps"] for r in rounds)),
        "rps_with": round(statistics.median(r["with"]["rps"] for r in rounds)),
        "non_2xx": sum(r["without"]["non_2xx"] + r["with"]["non_2xx"] for r in rounds),
        "page_errors": [e for r in rounds for e in r["errors"]],
        "pages": pages,
        "rows_returned": [r["rows_returned"] for r in rounds],
        "rounds": [
            {
                "p99_without_ms": round(r["without"]["p99_ms"], 1),
                "p99_with_ms": round(r["with"]["p99_ms"], 1),
                "rps_without": round(r["without"]["rps"]),
                "rps_with": round(r["with"]["rps"]),
                "clicks": r["clicks"],
                "rows_returned": r["rows_returned"],
                "cpu_seconds": r["cpu"],
                **({"placement": r["placement"]} if "placement" in r else {}),
            }
            for r in rounds
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=["shared", "split", "both"], default="shared")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--installs", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--dashboard-workers", type=int, default=2)
    parser.add_argument("--max-clicks", type=int, default=2_000)
    parser.add_argument(
        "--redis-url",
        default="",
        help="a loopback redis:// URL for the rate-limit counters (default: a redis-server of"
        " the bench's own, placed with ingest in split; the machine's shared one is unpinned and"
        " would run on whichever CPU is idle)",
    )
    parser.add_argument("--no-jobs", action="store_true", help="no Celery worker and beat")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 10 and 1 <= args.seconds <= 120):
        parser.error("--rounds 1..10 and --seconds 1..120")
    if not (1 <= args.workers <= 16 and 1 <= args.dashboard_workers <= 16):
        parser.error("--workers and --dashboard-workers 1..16")
    if args.redis_url and not args.redis_url.startswith("redis://127.0.0.1:"):
        parser.error("--redis-url must be a loopback redis:// URL")
    topologies = ["shared", "split"] if args.topology == "both" else [args.topology]
    every_cpu = os.sched_getaffinity(0)
    if "split" in topologies and not {INGEST_CPU, DASHBOARD_CPU} <= every_cpu:
        sys.exit(f"--topology split needs CPUs {INGEST_CPU} and {DASHBOARD_CPU}")
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    if binaries() is None or as_postgres() is None:
        sys.exit("needs PostgreSQL's initdb and to run it as the postgres user")

    data_dir = Path(tempfile.mkdtemp(prefix="tm-bench-replica-"))
    pair = PgPair().start()
    servers: list[subprocess.Popen] = []
    redis_server = None
    results: dict[str, list[dict]] = {t: [] for t in topologies}
    try:
        redis_url = args.redis_url
        if not redis_url:
            redis_server, redis_url = start_redis(data_dir)
        env = env_for(pair, data_dir, replica=True, redis_url=redis_url)
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
        ports = {"ingest": harness.free_port(PORTS)}
        servers.append(
            harness.start_server(
                harness.gunicorn_cmd("config.wsgi:application", ports["ingest"], args.workers),
                env=env,
                port=ports["ingest"],
            )
        )
        pids = {
            "primary": postmaster(pair, "primary"),
            "replica": postmaster(pair, "replica"),
            "ingest gunicorn": servers[0].pid,
        }
        if redis_server is not None:
            pids["redis"] = redis_server.pid
        if not args.no_jobs:
            celery = [str(harness.BIN / "celery"), "-A", "config"]
            for name, cmd in (
                ("jobs worker", [*celery, "worker", "--loglevel", "WARNING", "--concurrency", "2"]),
                ("jobs beat", [*celery, "beat", "--loglevel", "WARNING"]),
            ):
                log = data_dir / f"{name.replace(' ', '-')}.log"
                servers.append(harness.start(cmd, env=env, log=log))
                pids[name] = servers[-1].pid
            time.sleep(JOBS_SETTLE)  # beat's first run of every job, before any round
            for server in servers[-2:]:
                if server.poll() is not None:
                    raise SystemExit(f"a job process stopped: {server.args}")
        trees = {"shared": {name: (pid, every_cpu) for name, pid in pids.items()}}
        if "split" in topologies:
            ports["dashboard"] = harness.free_port(p for p in PORTS if p != ports["ingest"])
            cmd = harness.gunicorn_cmd(
                "config.wsgi:application", ports["dashboard"], args.dashboard_workers
            )
            servers.append(
                harness.start_server(
                    harness.pinned(cmd, {DASHBOARD_CPU}), env=env, port=ports["dashboard"]
                )
            )
            pids["dashboard gunicorn"] = servers[-1].pid
            trees["shared"]["dashboard gunicorn"] = (servers[-1].pid, {DASHBOARD_CPU})
            trees["split"] = {
                "primary": (pids["primary"], {INGEST_CPU}),
                "ingest gunicorn": (pids["ingest gunicorn"], {INGEST_CPU}),
                "replica": (pids["replica"], {DASHBOARD_CPU}),
                "dashboard gunicorn": (pids["dashboard gunicorn"], {DASHBOARD_CPU}),
            }
            for name in ("redis", "jobs worker", "jobs beat"):
                if name in pids:  # the ingest host's, with the primary
                    trees["split"][name] = (pids[name], {INGEST_CPU})
        print("processes: " + ", ".join(f"{name} {pid}" for name, pid in pids.items()))
        session = login(ports["ingest"], "bench-admin", password)
        for port in ports.values():  # every page once on each server, warm, and each answers
            for page in PAGES:
                r = session.get(f"http://127.0.0.1:{port}{page.format(slug=SLUG)}", timeout=60)
                if r.status_code != 200:
                    raise SystemExit(f"{page} answered {r.status_code} on :{port}")
        ingest_round(ports["ingest"], project["ingest_key"], "warm", 3, args.connections)

        for n in range(args.rounds):
            # Alternate which topology goes first, so a drift of the machine's load over the
            # run does not always favour the same one.
            order = topologies if n % 2 == 0 else topologies[::-1]
            for topology in order:
                results[topology].append(
                    measure(
                        topology=topology,
                        n=n,
                        args=args,
                        key=project["ingest_key"],
                        session=session,
                        pair=pair,
                        ports=ports,
                        trees=trees,
                    )
                )
    finally:
        for server in reversed(servers):
            harness.stop(server)
        if redis_server is not None:
            harness.stop(redis_server)
        pair.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    summary = {t: summarize(rounds) for t, rounds in results.items() if rounds}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for topology, s in summary.items():
        print(
            f"\n{topology}: ingest p99 without the dashboard user {s['p99_without_ms']:.1f} ms,"
            f" with {s['p99_with_ms']:.1f} ms: {s['ratio']}x (target ≤ 1.2x);"
            f" rps {s['rps_without']} / {s['rps_with']}"
        )
        for page, p in s["pages"].items():
            print(
                f"  {page:<60} {p['views']:4d} views  median {p['median_ms']:7.1f}"
                f" ms  p90 {p['p90_ms']:7.1f} ms"
            )
        print(f"  non-2xx ingest answers: {s['non_2xx']}; page errors: {len(s['page_errors'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
