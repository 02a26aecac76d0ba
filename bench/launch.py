"""Starting and stopping the servers a benchmark drives: a free port, gunicorn (or any command)
in a session of its own, readiness polling, and a stop by PID that cannot leave strays.

Shared by bench/frontdoors.py, bench/soak.py and bench/ingest.py (imported as `launch`: a script
in bench/ has bench/ first on sys.path).
"""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port(ports: range) -> int:
    """The first port of `ports` free on 127.0.0.1."""
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port in {ports.start}-{ports.stop - 1}")


def start(cmd: list[str], *, env: dict, log: Path | None = None) -> subprocess.Popen:
    """Run `cmd` from the repository root in a session of its own, so a stuck process group can
    be killed as one, by its PID; output goes to `log`, or nowhere."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        start_new_session=True,
    )


def gunicorn(app: str, *, port: int, workers: int, env: dict, log: Path | None = None):
    """gunicorn serving `app` (e.g. config.wsgi) on 127.0.0.1:`port` with the repo's config."""
    cmd = [str(BIN / "gunicorn"), app, "-c", "gunicorn.conf.py"]
    cmd += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    return start(cmd, env=env, log=log)


def wait_ready(
    port: int,
    proc: subprocess.Popen,
    path: str = "/healthz",
    *,
    any_answer: bool = False,
    seconds: float = 30,
) -> None:
    """Poll GET `path` until it answers 200 (any HTTP status with `any_answer`); stop the
    process and exit if it dies or is not ready in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if any_answer or conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise SystemExit(f"server on port {port} not ready in {seconds:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process we started (gunicorn and celery stop their own children); SIGKILL its
    process group if it is still there after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
