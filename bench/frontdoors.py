"""Front-door load test: VoiceMode and Domscribe, driven the way their originals were load-tested.

Starts the platform under gunicorn on 127.0.0.1 with PostgreSQL + Redis, creates one project per
contract with generous limits, then sends TOTAL requests from CONCURRENCY threads (distinct ids per
request, keep-alive where the server allows it) to each front door. A request counts as ok only on
the contract's success status: 200 for VoiceMode, 204 for Domscribe. Bounded in count and time
(hard stop after --seconds per door); stops the server it started, by PID.

    python bench/frontdoors.py [--total 2000] [--concurrency 20] [--seconds 120] [--workers 4]
                               [--warmup 100] [--only voicemode|domscribe]

Thresholds are Domscribe's load test (< 1 % errors, p95 < 100 ms on a local target); the goals are
7x the VoiceMode worker's 206 req/s and 2x Domscribe's 600 req/s.
"""

import argparse
import datetime as dt
import hashlib
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
DB = "tm_bench_fd"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB}"
REDIS_URL = "redis://127.0.0.1:6379/9"
PORTS = range(18100, 18200)
GENEROUS = "100000000/h"
GOALS = {"voicemode": 7 * 206, "domscribe": 2 * 600}
MAX_ERROR_RATE = 0.01
MAX_P95_MS = 100.0
PLATFORMS = ["darwin", "linux", "win32", "freebsd", "openbsd"]
FRAMEWORKS = ["react", "vue", "next", "nuxt", "svelte", "astro", "solid", "unknown"]


def server_env() -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        SECRET_KEY="bench-only-secret",
        SECURE_SSL_REDIRECT="0",
        DATA_DIR="/tmp/tm-bench-fd",
        LOG_LEVEL="WARNING",
        ACCESS_LOG="",
    )
    return env


def reset_stores() -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
    redis.Redis.from_url(REDIS_URL).flushdb()  # db 9 is this benchmark's own


def create_project(contract: str) -> dict:
    slug = f"bench-{contract[:3]}-{uuid.uuid4().hex[:6]}"
    rates = ["--install-rate", GENEROUS, "--ip-rate", GENEROUS]
    out = subprocess.run(
        [PY, "manage.py", "create_project", slug, "--contract", contract, *rates, "--json"],
        cwd=ROOT,
        env=server_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def voicemode_request(slug: str) -> tuple[str, bytes, dict, int]:
    now = dt.datetime.now(dt.UTC)
    telemetry_id = str(uuid.uuid4())
    timestamp = now.isoformat()
    body = {
        "telemetry_id": telemetry_id,
        "timestamp": timestamp,
        "period_start": (now - dt.timedelta(days=1)).isoformat(),
        "period_end": timestamp,
        "environment": {
            "os": random.choice(["Linux", "Darwin", "Windows"]),
            "install_method": "uv",
            "mcp_host": None,
            "exec_source": "mcp",
            "version": "7.0.1",
        },
        "usage": {
            "total_sessions": random.randint(0, 20),
            "total_exchanges": random.randint(0, 200),
            "transport_usage": {"local": 3},
            "provider_usage": {"tts": {"kokoro": 6}, "stt": {"whisper-local": 6}},
        },
        "event_id": hashlib.sha256(f"{telemetry_id}:{timestamp}".encode()).hexdigest()[:16],
    }
    headers = {"Content-Type": "application/json", "User-Agent": "VoiceMode/7.0.1"}
    return f"/p/{slug}/telemetry", json.dumps(body).encode(), headers, 200


def domscribe_request(slug: str) -> tuple[str, bytes, dict, int]:
    body = {
        "protocol_version": "1.0.0",
        "daemon_version": "0.4.2",
        "session_id": secrets.token_urlsafe(16),
        "platform": random.choice(PLATFORMS),
        "node_version": "v22.11.0",
        "primary_framework": random.choice(FRAMEWORKS),
    }
    return (
        f"/p/{slug}/v1/session",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
        204,
    )


def drive(port: int, build, slug: str, total: int, concurrency: int, seconds: float) -> dict:
    tickets = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            with lock:
                if next(tickets) >= total:
                    break
            path, body, headers, expected = build(slug)
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                outcome = str(response.status)
                ok = response.status == expected
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                outcome, ok = type(exc).__name__, False
            mine.append((time.perf_counter() - started) * 1000)
            seen[outcome if not ok else "ok"] = seen.get(outcome if not ok else "ok", 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for k, v in seen.items():
                statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    done = len(latencies)
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(done - 1, int(q * done))], 1) if done else 0.0

    errors = done - statuses.get("ok", 0)
    return {
        "requests": done,
        "seconds": round(elapsed, 2),
        "req_per_s": round(done / elapsed, 1) if elapsed else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "error_rate": round(errors / done, 4) if done else 1.0,
        "statuses": statuses,
        "stopped_by_time": done < total,
    }


def verdict(name: str, r: dict) -> dict:
    thresholds = r["error_rate"] < MAX_ERROR_RATE and r["p95_ms"] < MAX_P95_MS
    goal = r["req_per_s"] >= GOALS[name]
    return {"thresholds": "PASS" if thresholds else "FAIL", "goal": "PASS" if goal else "FAIL"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--total", type=int, default=2000, help="requests per front door")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=120, help="hard stop per front door")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 2) * 2)
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests per door first")
    parser.add_argument("--only", choices=["voicemode", "domscribe"])
    args = parser.parse_args()
    if args.total < 1 or args.concurrency < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--total, --concurrency and --seconds must be positive, --warmup >= 0")

    reset_stores()
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=server_env(), check=True)
    doors = {"voicemode": voicemode_request, "domscribe": domscribe_request}
    if args.only:
        doors = {args.only: doors[args.only]}
    slugs = {name: create_project(name)["slug"] for name in doors}
    port = harness.free_port(PORTS)
    proc = harness.start(harness.gunicorn_cmd("config.wsgi", port, args.workers), env=server_env())
    results = {}
    try:
        harness.wait_ready(port, proc, path="/healthz")
        for name, build in doors.items():
            if args.warmup:  # untimed: lets every worker open its connections first
                drive(port, build, slugs[name], args.warmup, args.concurrency, 10)
            r = drive(port, build, slugs[name], args.total, args.concurrency, args.seconds)
            r.update(verdict(name, r))
            results[name] = r
            print(
                f"{name:10} {r['requests']:6d} req in {r['seconds']:6.2f} s  "
                f"{r['req_per_s']:8.1f} req/s (goal {GOALS[name]})  p50 {r['p50_ms']} ms  "
                f"p95 {r['p95_ms']} ms  p99 {r['p99_ms']} ms  errors {r['error_rate']:.2%}  "
                f"thresholds {r['thresholds']}  goal {r['goal']}",
                flush=True,
            )
    finally:
        harness.stop(proc)
    summary = {
        "total": args.total,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "results": results,
    }
    print(json.dumps(summary, indent=2))
    failed = any(r["thresholds"] == "FAIL" for r in results.values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
