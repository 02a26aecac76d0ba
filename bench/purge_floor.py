"""The floor under bench/purge.py's "ingest p99 during the purge <= 1.2x without": the same ingest
load and the same p99 ratio, around commands that purge nothing.

    .venv/bin/python bench/purge_floor.py [--rounds 8] [--window 1.8]

bench/purge.py scenario B measures p99 over the seconds `manage.py purge_events` runs against
p99 over a quiet stretch before it. Here each round measures that ratio around:

- `nothing`: no command at all (the ratio's own noise on this machine);
- `start-up`: `manage.py purge_events --help` (Django's start-up and the command's imports, no
  database work), the least any `purge_events` run does;
- `no-op purge`: `manage.py purge_events` with nothing expired.

Each command is padded with sleep to `--window` seconds (the 10M purge's wall on this kind of
machine), so every ratio is a p99 over as many requests as the real purge's. Its own database
(tm_bench_purge_floor) and Redis db 7; loopback only; bounded in rounds and time; stops only
the server it started, by PID. Prints one JSON line per measurement, then a summary.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tm_bench_purge_floor")
os.environ.setdefault("DATA_DIR", "/tmp/tm-bench-purge-floor")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # bench/harness.py
import purge  # bench/purge.py: its ingest load, p99 and set-up helpers

COMMANDS = {
    "nothing": ["true"],
    "start-up": [purge.PY, "manage.py", "purge_events", "--help"],
    "no-op purge": [purge.PY, "manage.py", "purge_events", "--json"],
}


def measure(port: int, key: str, cmd: list[str], window: float, baseline: float) -> dict:
    base = purge.run_ingest(port, key, lambda: time.sleep(baseline))
    span: dict = {}

    def during() -> None:
        span["start"] = time.time()
        subprocess.run(cmd, cwd=purge.ROOT, capture_output=True, check=True, timeout=120)
        span["command"] = time.time() - span["start"]
        time.sleep(max(0.0, window - span["command"]))
        span["end"] = time.time()

    samples = purge.run_ingest(port, key, during)
    inside = [lat for start, lat, _ in samples if span["start"] <= start <= span["end"]]
    without = purge.p99([lat for _, lat, _ in base]) * 1000
    with_cmd = purge.p99(inside) * 1000
    return {
        "command_seconds": round(span["command"], 2),
        "requests": len(inside),
        "p99_ms_without": round(without, 2),
        "p99_ms_during": round(with_cmd, 2),
        "ratio": round(with_cmd / without, 2),
        "non_2xx": sum(1 for *_, status in base + samples if not 200 <= status < 300),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--window", type=float, default=1.8)
    parser.add_argument("--baseline-seconds", type=float, default=4.0)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 30 or not 0.5 <= args.window <= 10:
        parser.error("--rounds in 1..30, --window in 0.5..10")
    purge.reset_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    from telemetry.services.projects import create_project

    call_command("migrate", verbosity=0)
    live = create_project(
        slug=purge.LIVE_SLUG, retention_days=90, install_rate="1000000/h", ip_rate="100000000/h"
    )
    port = harness.free_port(purge.PORTS)
    server = harness.start_server(
        harness.gunicorn_cmd("config.wsgi:application", port, 2), env=dict(os.environ), port=port
    )
    results: dict[str, list[dict]] = {name: [] for name in COMMANDS}
    try:
        for rnd in range(args.rounds):
            for name, cmd in COMMANDS.items():
                row = measure(port, live.ingest_key, cmd, args.window, args.baseline_seconds)
                results[name].append(row)
                print(json.dumps({"round": rnd, "command": name, **row}), flush=True)
    finally:
        harness.stop(server)
    summary = {}
    for name, rows in results.items():
        ratios = sorted(r["ratio"] for r in rows)
        summary[name] = {
            "ratios": ratios,
            "median": statistics.median(ratios),
            "rounds_over_1_2": sum(r > 1.2 for r in ratios),
        }
    print(json.dumps({"window_seconds": args.window, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
