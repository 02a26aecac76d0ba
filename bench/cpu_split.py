"""CPU time per ingest request, split by process: the web workers, the PostgreSQL backends of the
app's database, Redis. The platform's front doors and bench/refapp.py, side by side.

    .venv/bin/python bench/cpu_split.py [--seconds 10] [--setting gunicorn-sync-4]
                                        [--doors native,voicemode,domscribe] [--batches]

Requests per second on a shared 2-core machine move with whatever else runs on it; the CPU a
request costs each process moves much less, and it says which process to work on (the
profile behind bench/RESULTS.md's event-store figures). Each door runs under wrk as in
bench/ingest.py (same bodies, distinct ids and IPs), followed by a reference run; CPU is read
from /proc before and after each run: the server's own worker processes, the PostgreSQL
backends and autovacuum workers of its database, and redis-server (shared: other clients of
the same Redis count too). Uses bench/ingest.py's databases (recreated). Loopback only;
bounded in time; stops only the servers it started, by PID.

--batches measures bench/ingest.py's batch pair instead, per event: 1,000-event native batches
from 4 sender threads against the raw psycopg `executemany` loop of the same rows. The
"client" class is this process (the senders building bodies, or the reference building rows
and running psycopg), which the reference's Python side lives in.
"""

import argparse
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import harness
import ingest

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def snapshot(server_pid: int, database: str) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each process, by class."""
    classes: dict[str, dict[int, float]] = {
        "web": {},
        "postgres": {},
        "autovacuum": {},
        "redis": {},
    }
    web = {server_pid, *harness.descendants(server_pid)} if server_pid else set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cpu = _cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if pid in web:
            classes["web"][pid] = cpu
        elif cmd.startswith("postgres:") and f" {database} " in cmd:
            classes["autovacuum" if "autovacuum" in cmd else "postgres"][pid] = cpu
        elif "redis-server" in cmd:
            classes["redis"][pid] = cpu
    return classes


def per_request_ms(before: dict, after: dict, requests: int) -> dict[str, float]:
    """CPU ms per request of each class (a process that started during the run counts whole)."""
    out = {}
    for name, procs in after.items():
        used = sum(cpu - before[name].get(pid, 0.0) for pid, cpu in procs.items())
        out[name] = round(used * 1000 / max(requests, 1), 3)
    out["total"] = round(sum(v for k, v in out.items() if k != "autovacuum"), 3)
    return out


def measured_run(port, server, database, door, project, tag, seconds) -> dict:
    before = snapshot(server.pid, database)
    r = ingest.wrk_door(port, door, project, *tag, seconds, 32)
    after = snapshot(server.pid, database)
    return {"rps": round(r["rps"], 1), "cpu_ms": per_request_ms(before, after, r["requests"])}


def batch_run(server, database: str, run) -> dict:
    """CPU µs per stored event of each class while `run()` sends batches.

    The reference opens its connections inside the run and closes them before it returns, so
    the processes are sampled every 50 ms and each one's last reading counts.
    """
    pid = server.pid if server else 0
    before = snapshot(pid, database)
    latest = {name: dict(procs) for name, procs in before.items()}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for name, procs in snapshot(pid, database).items():
                latest[name].update(procs)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    client0 = os.times()
    r = run()
    client1 = os.times()
    done.set()
    sampler.join()
    for name, procs in snapshot(pid, database).items():
        latest[name].update(procs)
    events = max(r["events"], 1)
    cpu = {k: round(v * 1000 / events, 1) for k, v in per_request_ms(before, latest, 1).items()}
    # os.times() counts the sampler too: a few ms a second, charged to the client of both runs.
    client = (client1.user - client0.user) + (client1.system - client0.system)
    cpu["client"] = round(client * 1e6 / events, 1)
    cpu["total"] = round(cpu["total"] + cpu["client"], 1)
    return {"events_per_s": round(r["events_per_s"]), "errors": r["errors"], "cpu_us": cpu}


def batches(setting: str, seconds: int) -> None:
    ingest.reset_stores()
    projects = ingest.create_projects()
    tags = ingest.Tags()
    port = harness.free_port(ingest.PORTS)
    ours = harness.start_server(
        harness.server_cmd(setting, "config.wsgi:application", port),
        env=ingest.server_env(),
        port=port,
    )
    key = projects["native"]["ingest_key"]
    results = []
    try:
        ingest.batches_ours(port, key, tags.new(setting, 9, "w")[0], 2)  # warm up
        for name, run, server, db in (
            (
                "batch",
                lambda: ingest.batches_ours(port, key, tags.new(setting, 9, "x")[0], seconds),
                ours,
                ingest.OURS_DB,
            ),
            (
                "raw executemany",
                lambda: ingest.batches_ref(tags.new(setting, 9, "y")[0], seconds),
                None,
                ingest.REF_DB,
            ),
        ):
            result = batch_run(server, db, run)
            result.update(app=name, load=round(os.getloadavg()[0], 2))
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        harness.stop(ours)
    print(json.dumps({"setting": setting, "seconds": seconds, "runs": results}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--setting", default=harness.GUNICORN, choices=list(harness.SETTINGS))
    parser.add_argument("--doors", default=",".join(ingest.DOORS))
    parser.add_argument("--batches", action="store_true", help="the batch pair, per event")
    args = parser.parse_args()
    if args.batches:
        if not 1 <= args.seconds <= 60:
            parser.error("--seconds in 1..60")
        return batches(args.setting, args.seconds)
    doors = [d for d in args.doors.split(",") if d]
    if not doors or any(d not in ingest.DOORS for d in doors) or not 1 <= args.seconds <= 60:
        parser.error(f"--doors from {', '.join(ingest.DOORS)}; --seconds in 1..60")
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")

    ingest.reset_stores()
    projects = ingest.create_projects()
    env = ingest.server_env()
    tags = ingest.Tags()
    port = harness.free_port(ingest.PORTS)
    ours = harness.start_server(
        harness.server_cmd(args.setting, "config.wsgi:application", port), env=env, port=port
    )
    try:
        ref_port = harness.free_port(ingest.PORTS)
        ref = harness.start_server(
            harness.server_cmd(args.setting, "refapp:application", ref_port),
            env=env,
            port=ref_port,
            path="/api/v1/events",
            any_status=True,
        )
    except BaseException:
        harness.stop(ours)
        raise
    results = []
    try:
        for door in doors:
            for name, p, srv, db, d, project in (
                (door, port, ours, ingest.OURS_DB, door, projects[door]),
                ("reference", ref_port, ref, ingest.REF_DB, "native", {}),
            ):
                ingest.wrk_door(p, d, project, *tags.new(args.setting, 9, "w"), 2, 8)
                run = measured_run(
                    p, srv, db, d, project, tags.new(args.setting, 9, "x"), args.seconds
                )
                run.update(app=name, load=round(os.getloadavg()[0], 2))
                results.append(run)
                print(json.dumps(run), flush=True)
    finally:
        harness.stop(ref)
        harness.stop(ours)
    print(json.dumps({"setting": args.setting, "seconds": args.seconds, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
