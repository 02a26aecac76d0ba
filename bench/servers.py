"""Which server for the platform: gunicorn sync vs gthread vs uvicorn (ASGI), same ingest load.

Uses bench/ingest.py's database, project and wrk script; each server gets the same worker count.
    pip install -r bench/requirements.txt && python bench/servers.py [--seconds 15]
"""

import argparse
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import ingest as bench  # bench/ingest.py

ROOT = Path(__file__).resolve().parent.parent
PORT = 18003


def start(cmd: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=bench.sh_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.3)
    bench.stop(proc)
    raise RuntimeError(f"{cmd[0]} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    bench.reset_databases()
    key = bench.prepare_platform()
    bin_dir = Path(bench.PY).parent
    w = str(args.workers)
    servers = {
        "gunicorn-sync": [
            str(bin_dir / "gunicorn"),
            "config.wsgi",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{PORT}",
            "--workers",
            w,
        ],
        "gunicorn-gthread": [
            str(bin_dir / "gunicorn"),
            "config.wsgi",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{PORT}",
            "--workers",
            w,
            "--worker-class",
            "gthread",
            "--threads",
            "4",
        ],
        "uvicorn-asgi": [
            str(bin_dir / "uvicorn"),
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
            "--workers",
            w,
            "--no-access-log",
            "--log-level",
            "warning",
        ],
    }
    results = {}
    for name, cmd in servers.items():
        proc = start(cmd)
        try:
            bench.run_wrk(PORT, key, 3, args.connections, f"w{name}")
            r = bench.run_wrk(PORT, key, args.seconds, args.connections, name)
        finally:
            bench.stop(proc)
        results[name] = {k: round(r[k], 2) for k in ("rps", "p50_ms", "p99_ms", "errors")}
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
