"""Ingest benchmark: the platform vs a bare DRF reference app, same gunicorn, same machine.

Starts each app under gunicorn on 127.0.0.1 with PostgreSQL + Redis, drives single-event POSTs
with wrk (distinct install ids and client IPs via X-Forwarded-For through TRUSTED_PROXIES), then
batch POSTs of 1,000 events from Python threads. Bounded in time; stops what it started by PID.

    python bench/ingest.py [--seconds 20] [--connections 32] [--workers 4] [--rounds 2]
Needs wrk (apt-get install wrk). Prints a JSON summary; record it in bench/RESULTS.md.
"""

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import launch  # bench/launch.py
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
OURS_DB, REF_DB = "tm_bench_ingest", "tm_bench_ref"
OURS_PORT, REF_PORT = 18001, 18002


def sh_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{OURS_DB}",
        REDIS_URL="redis://127.0.0.1:6379/8",
        SECRET_KEY="bench-only-secret",
        SECURE_SSL_REDIRECT="0",
        TRUSTED_PROXIES="127.0.0.1/32",
        DATA_DIR=str(ROOT / "data" / "bench"),
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def reset_databases() -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        for name in (OURS_DB, REF_DB):
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{REF_DB}", autocommit=True) as c:
        c.execute(
            "CREATE TABLE ref_event (id bigserial PRIMARY KEY, install_id varchar(64) NOT NULL,"
            " name varchar(64) NOT NULL, ts timestamptz NOT NULL, properties jsonb NOT NULL)"
        )
    import redis

    for db in (7, 8):
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()


def prepare_platform() -> str:
    env = sh_env()
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run(
        [
            PY,
            "manage.py",
            "create_project",
            f"bench-{uuid.uuid4().hex[:6]}",
            "--json",
            "--install-rate",
            "1000000/h",
            "--ip-rate",
            "100000000/h",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)["ingest_key"]


def start(app: str, port: int, workers: int) -> subprocess.Popen:
    env = sh_env(REF_DB=REF_DB, PYTHONPATH=str(ROOT / "bench"))
    proc = launch.gunicorn(app, port=port, workers=workers, env=env)
    # The reference app has no /healthz: any answer means it is up.
    launch.wait_ready(port, proc, any_answer=True)
    return proc


stop = launch.stop


def worker_rss_mb(proc: subprocess.Popen) -> list[float]:
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    sizes = []
    for pid in children.stdout.split():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def run_wrk(port: int, key: str, seconds: int, connections: int, run: str) -> dict:
    env = dict(os.environ, BENCH_KEY=key, BENCH_RUN=run)
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(ROOT / "bench" / "ingest.lua"),
            f"http://127.0.0.1:{port}/api/v1/events",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def run_batches(port: int, key: str, seconds: int, threads: int = 3, size: int = 1000) -> dict:
    stop_at = time.monotonic() + seconds
    counts, errors = [0], [0]
    lock = threading.Lock()

    def loop(tid: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            now = dt.datetime.now(dt.UTC).isoformat()
            events = [
                {
                    "install_id": f"batch_{tid}_{n}_{i:04d}_{uuid.uuid4().hex[:6]}",
                    "name": "app.start",
                    "timestamp": now,
                    "event_id": uuid.uuid4().hex,
                    "app_version": "1.2.3",
                    "os": "linux",
                    "properties": {"i": i},
                }
                for i in range(size)
            ]
            body = json.dumps({"events": events}).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/events",
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {key}",
                    "X-Forwarded-For": f"10.9.{tid}.{n % 250 + 1}",
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    accepted = json.loads(r.read())["accepted"]
                with lock:
                    counts[0] += accepted
            except OSError:
                with lock:
                    errors[0] += 1
            n += 1

    started = time.monotonic()
    pool = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 60)
    elapsed = time.monotonic() - started
    return {"events": counts[0], "errors": errors[0], "events_per_s": counts[0] / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 2) * 2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-seconds", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")

    reset_databases()
    key = prepare_platform()
    ours, ref, rss = [], [], []
    for r in range(args.rounds):
        for name, app, port, sink in (
            ("ours", "config.wsgi", OURS_PORT, ours),
            ("ref", "refapp:application", REF_PORT, ref),
        ):
            proc = start(app, port, args.workers)
            try:
                run_wrk(port, key, 3, args.connections, f"w{r}{name}")  # warm-up
                sink.append(run_wrk(port, key, args.seconds, args.connections, f"{r}{name}"))
                if name == "ours":
                    rss.extend(worker_rss_mb(proc))
            finally:
                stop(proc)
            print(name, json.dumps(sink[-1]), flush=True)
    proc = start("config.wsgi", OURS_PORT, args.workers)
    try:
        batch = run_batches(OURS_PORT, key, args.batch_seconds)
        rss.extend(worker_rss_mb(proc))
    finally:
        stop(proc)

    def med(rows, field):
        return statistics.median(r[field] for r in rows)

    summary = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "ours_rps": round(med(ours, "rps"), 1),
        "ref_rps": round(med(ref, "rps"), 1),
        "ratio": round(med(ours, "rps") / med(ref, "rps"), 3),
        "ours_p50_ms": med(ours, "p50_ms"),
        "ours_p99_ms": med(ours, "p99_ms"),
        "ref_p50_ms": med(ref, "p50_ms"),
        "ref_p99_ms": med(ref, "p99_ms"),
        "ours_errors": sum(r["errors"] for r in ours),
        "ref_errors": sum(r["errors"] for r in ref),
        "batch_events_per_s": round(batch["events_per_s"]),
        "batch_errors": batch["errors"],
        "max_worker_rss_mb": round(max(rss), 1) if rss else None,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
