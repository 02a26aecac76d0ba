"""Soak: mixed traffic on every front door at ~70 % of measured capacity for --seconds (10 minutes
by default), with a Celery worker and beat purging every minute, on PostgreSQL + Redis.

    .venv/bin/python bench/soak.py [--seconds 600] [--rate N] [--ramp-seconds 15]
                                   [--workers 4] [--concurrency 16] [--old-events 20000]

Starts gunicorn (127.0.0.1, a free port in 18500-18599), a Celery worker and beat on a fresh
database tm_bench_soak and Redis db 6 (this benchmark's own); shortens the purge and salt
rotation to every minute in that database's beat schedule and seeds --old-events rows past
retention for the purge to delete under load. Without --rate it first measures capacity with a
closed-loop ramp and soaks at 70 % of it. Pass: zero 5xx, gunicorn RSS growth <= 10 % (end of the
first window to the end), p99 of the last window <= 1.5 x the first (+5 ms), and purges that ran.
Window = 60 s (a third of the run if shorter). Prints a JSON summary; exits 1 on a failed
criterion. Every process it starts is stopped by its PID.
"""

import argparse
import datetime as dt
import http.client
import itertools
import json
import os
import random
import secrets
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import harness
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DB = "tm_bench_soak"
DATABASE_URL = os.environ.get("SOAK_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{DB}")
REDIS_URL = os.environ.get("SOAK_REDIS_URL", "redis://127.0.0.1:6379/6")
DATA_DIR = Path("/tmp/tm-bench-soak")
PORTS = range(18500, 18600)
GENEROUS = "100000000/h"
CONTRACTS = ["native", "voicemode", "domscribe", "baofeng", "pryx", "axiom"]


def env() -> dict:
    e = dict(os.environ)
    e.update(
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        SECRET_KEY="bench-only-secret",
        SECURE_SSL_REDIRECT="0",
        DATA_DIR=str(DATA_DIR),
        LOG_LEVEL="WARNING",
        ACCESS_LOG="",
    )
    return e


def manage(*args: str) -> str:
    return subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env(), check=True, capture_output=True, text=True
    ).stdout


def reset_stores() -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
    redis.Redis.from_url(REDIS_URL).flushdb()  # db 6 is this benchmark's own
    DATA_DIR.mkdir(parents=True, exist_ok=True)


SETUP = """
import datetime as dt
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks
from telemetry.models import Event, Project
from telemetry.services.schedule import JOBS, ensure_default_schedule, periodic_task_name
ensure_default_schedule()
every, _ = CrontabSchedule.objects.get_or_create(minute="*", hour="*", day_of_week="*",
    day_of_month="*", month_of_year="*", timezone="UTC")
names = [periodic_task_name(JOBS[n]) for n in ("purge", "rotate_salts")]
PeriodicTask.objects.filter(name__in=names).update(crontab=every)
PeriodicTasks.update_changed()
p = Project.objects.get(slug="{slug}")
old = timezone.now() - dt.timedelta(days=p.retention_days + 3)
rows = [Event(project=p, install_id=f"inst_old{{i:08d}}", name="old", timestamp=old,
    received_at=old, event_id=f"old_{{i:010d}}") for i in range({n})]
Event.objects.bulk_create(rows, batch_size=5000)
"""

COUNT = """
from telemetry.models import Event, TaskRun
print(TaskRun.objects.filter(task="purge", ok=True).count(),
      TaskRun.objects.filter(ok=False).count(), Event.objects.filter(name="old").count())
"""


def start(cmd: list[str], log: str) -> subprocess.Popen:
    return harness.start(cmd, env=env(), log=DATA_DIR / log)


# --- requests --------------------------------------------------------------------------------


def build(contract: str, project: dict) -> tuple[str, bytes, dict, int]:
    """(path, body, headers, expected status) of one valid request of `contract`."""
    now = dt.datetime.now(dt.UTC)
    iso = now.isoformat()
    uid = uuid.uuid4().hex
    slug = project["slug"]
    bearer = {"Authorization": f"Bearer {project['ingest_key']}"}
    json_type = {"Content-Type": "application/json"}
    install = f"inst_{random.randrange(5000):08d}"
    if contract == "native":
        body = {
            "install_id": install,
            "name": random.choice(["app.start", "command.run", "error"]),
            "timestamp": iso,
            "event_id": f"evt_{uid}",
            "app_version": "1.4.2",
            "os": random.choice(["linux", "darwin", "windows"]),
            "properties": {"command": random.choice(["init", "build", "deploy"])},
        }
        return "/api/v1/events", json.dumps(body).encode(), {**json_type, **bearer}, 202
    if contract == "voicemode":
        body = {
            "event_id": uid[:16],
            "telemetry_id": str(uuid.UUID(int=random.randrange(5000) + 1)),
            "timestamp": iso,
            "environment": {"os": "Linux", "version": "7.0.1", "install_method": "uv"},
            "usage": {"total_sessions": random.randint(0, 20)},
        }
        return f"/p/{slug}/telemetry", json.dumps(body).encode(), json_type, 200
    if contract == "domscribe":
        body = {
            "protocol_version": "1.0.0",
            "daemon_version": "0.4.2",
            "session_id": secrets.token_urlsafe(16),
            "platform": random.choice(["darwin", "linux", "win32"]),
            "node_version": "v22.11.0",
            "primary_framework": random.choice(["react", "vue", "svelte"]),
        }
        return f"/p/{slug}/v1/session", json.dumps(body).encode(), json_type, 204
    if contract == "baofeng":
        body = {
            "event_type": random.choice(["flash_error", "connect_error", "client_error"]),
            "occurred_at": iso,
            "session_id": install,
            "message": "Timeout writing block 3",
        }
        return f"/p/{slug}/event", json.dumps(body).encode(), {"Content-Type": "text/plain"}, 200
    if contract == "pryx":
        body = [
            {
                "correlation_id": f"corr-{uid}-{i}",
                "timestamp": int(now.timestamp() * 1000),
                "level": random.choice(["info", "warn", "error"]),
                "category": "provider",
                "device_id": install,
                "duration_ms": random.randint(5, 900),
            }
            for i in range(random.randint(1, 5))
        ]
        return f"/p/{slug}/api/telemetry/ingest", json.dumps(body).encode(), json_type, 200
    body = [
        {"_time": iso, "event_type": "request", "customer_id": install, "status": 200}
        for _ in range(random.randint(1, 10))
    ]
    return (
        f"/p/{slug}/v1/datasets/events/ingest",
        json.dumps(body).encode(),
        {**json_type, **bearer},
        200,
    )


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[float, float, str]] = []  # (seconds since start, ms, outcome)

    def add(self, rows) -> None:
        with self.lock:
            self.rows.extend(rows)


def sender(port, projects, tickets, at, deadline, recorder, t0) -> None:
    """Send requests until the deadline; with `at`, ticket i waits until t0 + at(i) (open loop)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    mine = []
    while True:
        i = next(tickets)
        if at is not None:
            delay = t0 + at(i) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if time.monotonic() >= deadline:
            break
        contract = CONTRACTS[i % len(CONTRACTS)]
        path, body, headers, expected = build(contract, projects[contract])
        started = time.monotonic()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            outcome = "ok" if response.status == expected else str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            outcome = type(exc).__name__
        mine.append((started - t0, (time.monotonic() - started) * 1000, outcome))
    conn.close()
    recorder.add(mine)


def drive(port, projects, seconds, concurrency, rate=None) -> Recorder:
    recorder = Recorder()
    tickets = itertools.count()  # next() on a count is atomic under the GIL
    t0 = time.monotonic()
    at = (lambda i: i / rate) if rate else None
    threads = [
        threading.Thread(
            target=sender, args=(port, projects, tickets, at, t0 + seconds, recorder, t0)
        )
        for _ in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return recorder


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1) if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument(
        "--rate", type=float, default=None, help="requests/s (default: 70 %% of capacity)"
    )
    parser.add_argument("--ramp-seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--old-events", type=int, default=20000)
    args = parser.parse_args()
    if not 10 <= args.seconds <= 3600:
        parser.error("--seconds must be between 10 and 3600")

    reset_stores()
    manage("migrate", "--noinput")
    projects = {}
    for contract in CONTRACTS:
        slug = f"soak-{contract}"
        rates = ["--install-rate", GENEROUS, "--ip-rate", GENEROUS]
        projects[contract] = json.loads(
            manage("create_project", slug, "--contract", contract, *rates, "--json")
        )
    manage("shell", "-v", "0", "-c", SETUP.format(slug="soak-pryx", n=args.old_events))

    port = harness.free_port(PORTS)
    web = start(harness.gunicorn_cmd("config.wsgi", port, args.workers), "web.log")
    worker = start(
        [
            PY,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        "worker.log",
    )
    beat = start(
        [
            PY,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "--loglevel",
            "WARNING",
            "--schedule",
            str(DATA_DIR / "beat-schedule"),
        ],
        "beat.log",
    )
    try:
        harness.wait_ready(port, web, path="/readyz")
        capacity = None
        if args.rate is None:
            ramp = drive(port, projects, args.ramp_seconds, args.concurrency)
            capacity = round(len(ramp.rows) / args.ramp_seconds, 1)
            rate = max(1.0, 0.7 * capacity)
        else:
            rate = args.rate
        window = min(60, args.seconds // 3)
        samples: list[tuple[float, float]] = []
        stop_sampling = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not stop_sampling.wait(2.0):
                samples.append((time.monotonic() - t0, harness.total_rss_mb(web.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        soak = drive(port, projects, args.seconds, args.concurrency, rate)
        stop_sampling.set()
        sampler.join(5)
        counts = manage("shell", "-v", "0", "-c", COUNT).strip().splitlines()[-1]
        purges, failed_runs, old_left = map(int, counts.split())
    finally:
        for proc in (beat, worker, web):
            harness.stop(proc, timeout=20)

    rows = soak.rows
    outcomes: dict[str, int] = {}
    for _, _, o in rows:
        outcomes[o] = outcomes.get(o, 0) + 1
    server_errors = sum(n for o, n in outcomes.items() if o.startswith("5"))
    first = [ms for t, ms, _ in rows if t < window]
    last = [ms for t, ms, _ in rows if t >= args.seconds - window]
    rss_start = next((mb for t, mb in samples if t >= window), samples[0][1] if samples else 0)
    rss_end = samples[-1][1] if samples else 0
    growth = round((rss_end - rss_start) / rss_start * 100, 1) if rss_start else None
    p99_first, p99_last = pct(first, 0.99), pct(last, 0.99)
    checks = {
        "zero_5xx": server_errors == 0,
        "all_ok": outcomes.get("ok", 0) == len(rows),
        "rss_growth_le_10pct": growth is not None and growth <= 10,
        "p99_stable": p99_last <= 1.5 * p99_first + 5,
        "purges_ran": purges >= 1 and failed_runs == 0,
    }
    summary = {
        "seconds": args.seconds,
        "window_s": window,
        "capacity_rps": capacity,
        "target_rps": round(rate, 1),
        "achieved_rps": round(len(rows) / args.seconds, 1),
        "requests": len(rows),
        "outcomes": outcomes,
        "p50_ms": pct([ms for _, ms, _ in rows], 0.5),
        "p99_ms": pct([ms for _, ms, _ in rows], 0.99),
        "p99_first_window_ms": p99_first,
        "p99_last_window_ms": p99_last,
        "rss_mb_after_first_window": rss_start,
        "rss_mb_end": rss_end,
        "rss_growth_pct": growth,
        "purge_runs": purges,
        "failed_task_runs": failed_runs,
        "old_events_left": old_left,
        "workers": args.workers,
        "checks": checks,
        "passed": all(checks.values()),
    }
    print(json.dumps(summary, indent=2))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
