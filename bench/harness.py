"""Start-up and measurement helpers shared by the benchmarks: servers started in their own
process group, readiness waits, stop by PID, worker memory, and wrk runs with a Lua script.

Every server is bound to 127.0.0.1 and started with start_new_session=True, so `stop()` can end
exactly the processes a benchmark started (the leader by its PID, then its group), nothing else.
CPU placement (`pinned`, `pin_tree`, `off_cpus`) lets one machine model separate hosts, and
`cpu_times`/`tree_cpu_seconds` tell whose work filled each CPU.
"""

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent

# The server settings issue 10 is judged under: name -> (workers, threads per worker).
GUNICORN = "gunicorn-sync-4"
GRANIAN = "granian-2x4"
SETTINGS = {GUNICORN: (4, 1), GRANIAN: (2, 4)}


def gunicorn_cmd(app: str, port: int, workers: int = 4) -> list[str]:
    """gunicorn with the platform's own gunicorn.conf.py (sync workers), on loopback."""
    return [
        str(BIN / "gunicorn"),
        app,
        "-c",
        "gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
    ]


def granian_cmd(app: str, port: int, workers: int = 2, threads: int = 4) -> list[str]:
    """granian's WSGI interface: `workers` processes, each running the app on `threads`."""
    return [
        str(BIN / "granian"),
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--no-access-log",
        "--log-level",
        "warning",
        app,
    ]


def server_cmd(setting: str, app: str, port: int) -> list[str]:
    """The command for one of SETTINGS; `app` is "module:callable"."""
    workers, threads = SETTINGS[setting]
    if setting == GRANIAN:
        return granian_cmd(app, port, workers, threads)
    return gunicorn_cmd(app, port, workers)


def free_port(ports: Iterable[int]) -> int:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port in the benchmark's range")


def start(cmd: list[str], *, env: dict, log: Path | None = None) -> subprocess.Popen:
    """Start `cmd` in a session of its own (so its workers can be stopped as one group)."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed by the child)
    try:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()


def wait_ready(
    port: int,
    proc: subprocess.Popen,
    *,
    path: str = "/healthz",
    any_status: bool = False,
    seconds: float = 30,
) -> None:
    """Wait until GET `path` answers 200 (any status with `any_status`: an app without a health
    route is up once it answers at all). Stops `proc` and exits if it dies or never answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status == 200 or any_status:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.3)
    stop(proc)
    raise SystemExit(f"{proc.args[0]} not ready on port {port} in {seconds:.0f} s")


def start_server(
    cmd: list[str], *, env: dict, port: int, path: str = "/healthz", any_status: bool = False
) -> subprocess.Popen:
    proc = start(cmd, env=env)
    wait_ready(port, proc, path=path, any_status=any_status)
    return proc


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the leader we started (a server master stops its own workers); SIGKILL its
    process group if it is stuck, and sweep any member the leader left behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    _signal_group(proc.pid, signal.SIGKILL)  # the group is ours: start() made a new session


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(c) for c in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return kids


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (its children, theirs, and so on)."""
    out, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += _children(child)
    return out


def worker_rss_mb(proc: subprocess.Popen) -> list[float]:
    """Resident memory of each process below the leader (gunicorn or granian workers)."""
    return [round(_rss_mb(pid), 1) for pid in descendants(proc.pid)]


def pinned(cmd: list[str], cpus: Iterable[int] | None) -> list[str]:
    """`cmd` run under `taskset -c` on `cpus` (its children inherit the mask); as is without."""
    if cpus is None:
        return list(cmd)
    cpus = sorted(set(cpus))
    if not cpus or any(c < 0 for c in cpus):
        raise ValueError(f"cpus must be non-negative CPU numbers, got {cpus}")
    return ["taskset", "-c", ",".join(map(str, cpus)), *cmd]


def _threads(pid: int) -> list[int]:
    """The thread ids of a process (a mask is per thread; a new thread inherits its creator's)."""
    try:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def pin_tree(pid: int, cpus: Iterable[int]) -> int:
    """Move a running process, every thread of it and everything below it onto `cpus`; returns
    how many processes. The leader goes first, so a child it forks meanwhile inherits the mask."""
    cpus = set(cpus)
    moved = 0
    for p in [pid, *descendants(pid)]:
        threads = _threads(p)
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, cpus)
        moved += bool(threads)
    return moved


def off_cpus(pid: int, cpus: Iterable[int]) -> tuple[int, list[int]]:
    """(processes in the tree of `pid`, those with a thread whose CPU mask is not exactly
    `cpus`): the check that children forked after pinning (new backends, respawned workers)
    inherited it."""
    cpus, tree, wrong = set(cpus), [pid, *descendants(pid)], []
    for p in tree:
        for tid in _threads(p):
            with contextlib.suppress(ProcessLookupError):
                if os.sched_getaffinity(tid) != cpus:
                    wrong.append(p)
                    break
    return len(tree), wrong


def parse_cpu_times(stat: str, ticks: int) -> dict[int, dict[str, float]]:
    """Per-CPU seconds from /proc/stat's `cpuN` lines: busy (user, nice, system, irq, softirq),
    idle (idle, iowait) and steal (taken by the hypervisor)."""
    out = {}
    for line in stat.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        out[int(name[3:])] = {
            "busy": (user + nice + system + irq + softirq) / ticks,
            "idle": (idle + iowait) / ticks,
            "steal": steal / ticks,
        }
    return out


def cpu_times() -> dict[int, dict[str, float]]:
    return parse_cpu_times(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process tree: each live process's own time plus what its
    reaped children used (so a backend that exits between two readings is still counted)."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for p in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def total_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    return round(sum(_rss_mb(p) for p in [pid, *descendants(pid)]), 1)


def run_wrk(
    url: str,
    *,
    script: Path,
    env: dict,
    seconds: int,
    connections: int,
    threads: int = 2,
    timeout: str = "5s",
    cpus: Iterable[int] | None = None,
) -> dict:
    """Run wrk (on `cpus` when given) with a Lua script whose done() prints one line
    `RESULT {json}`; returns that JSON plus `rps` (responses per second over wrk's own measured
    duration)."""
    out = subprocess.run(
        pinned(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                timeout,
                "-s",
                str(script),
                url,
            ],
            cpus,
        ),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out}")
    result = json.loads(line[len("RESULT ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result
