"""Which server for the platform: gunicorn sync vs gthread vs uvicorn (ASGI), same ingest load.

Uses bench/ingest.py's database, project and wrk script; each server gets the same worker count.
    pip install -r bench/requirements.txt && python bench/servers.py [--seconds 15]
"""

import argparse
import json

import harness
import ingest as bench  # bench/ingest.py

PORT = 18003


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    bench.reset_stores()
    native = bench.create_projects()["native"]
    tags = bench.Tags()
    w = args.workers
    servers = {
        "gunicorn-sync": harness.gunicorn_cmd("config.wsgi", PORT, w),
        "gunicorn-gthread": [
            *harness.gunicorn_cmd("config.wsgi", PORT, w),
            *["--worker-class", "gthread", "--threads", "4"],
        ],
        "uvicorn-asgi": [
            str(harness.BIN / "uvicorn"),
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
            "--workers",
            str(w),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
    }
    results = {}
    for name, cmd in servers.items():
        proc = harness.start_server(cmd, env=bench.server_env(), port=PORT)
        try:
            bench.wrk_door(PORT, "native", native, *tags.new(name, 0, "w"), 3, args.connections)
            r = bench.wrk_door(
                PORT, "native", native, *tags.new(name, 0, "s"), args.seconds, args.connections
            )
        finally:
            harness.stop(proc)
        r["errors"] = r["non_2xx"] + r["socket_errors"]
        results[name] = {k: round(r[k], 2) for k in ("rps", "p50_ms", "p99_ms", "errors")}
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
