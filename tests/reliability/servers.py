"""Real processes for the fault tests: gunicorn, a private redis-server, and a TCP proxy that can
drop every connection it carries. All bind 127.0.0.1 on free ports; each is stopped by its PID.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request; never raises on an HTTP error status."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(url: str, payload, key: str, ip: str | None = None):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    if ip:
        headers["X-Forwarded-For"] = ip
    return http("POST", url, json.dumps(payload).encode(), headers)


def server_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a platform process: our own data dir, production-like settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    for name in ("DATABASE_URL", "REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)
    env.update(DATA_DIR=str(data_dir), SECRET_KEY="test-only", SECURE_SSL_REDIRECT="0")
    env.update(overrides)
    return env


def manage(env: dict, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout


def create_project(env: dict, slug: str, *extra: str) -> dict:
    return json.loads(manage(env, "create_project", slug, "--json", *extra))


@contextlib.contextmanager
def gunicorn(env: dict, workers: int = 1):
    """A gunicorn serving the platform on a free port; yields its base URL."""
    port = free_port()
    log = open(Path(env["DATA_DIR"]) / f"gunicorn-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("gunicorn exited at start") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("gunicorn did not answer /healthz within 30 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class RedisServer:
    """A private, throw-away redis-server: no persistence, loopback only, killed by PID."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of `target`; `stop()` closes the listener and cuts every
    connection it carries (as a database failover or a network partition would), `start()`
    listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> "DroppingProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


# Every front door's success status, for a valid request built by `valid_request`.
SUCCESS = {
    "native": 202,
    "voicemode": 200,
    "domscribe": 204,
    "baofeng": 200,
    "pryx": 200,
    "axiom": 200,
}

CREATE_DOORS = """
import json
from telemetry.services.projects import create_project
out = {}
for contract in ("voicemode", "domscribe", "baofeng", "pryx", "axiom"):
    p = create_project(slug=f"door-{contract}", contract=contract, install_rate="1000/h",
                       ip_rate="100000/h")
    out[contract] = {"slug": p.project.slug, "ingest_key": p.ingest_key}
print(json.dumps(out))
"""


def create_door_projects(env: dict) -> dict:
    """One project per non-native contract, in one process: {contract: {slug, ingest_key}}."""
    return json.loads(manage(env, "shell", "-v", "0", "-c", CREATE_DOORS).strip().splitlines()[-1])


def valid_request(contract: str, project: dict) -> tuple[str, bytes, dict]:
    """(path, body, headers) of one valid, never-duplicate request to `contract`'s front door."""
    import datetime as dt
    import uuid

    now = dt.datetime.now(dt.UTC)
    uid = uuid.uuid4().hex
    install = f"inst_{uid[:12]}"
    key = {"Authorization": f"Bearer {project['ingest_key']}"}
    as_json = {"Content-Type": "application/json"}
    base = "" if contract == "native" else f"/p/{project['slug']}"
    if contract == "native":
        body = {"install_id": install, "name": "app.start", "timestamp": now.isoformat()}
        return (
            "/api/v1/events",
            json.dumps({**body, "event_id": f"evt_{uid}"}).encode(),
            {
                **as_json,
                **key,
            },
        )
    if contract == "voicemode":
        body = {
            "event_id": uid[:16],
            "telemetry_id": str(uuid.uuid4()),
            "timestamp": now.isoformat(),
            "environment": {"os": "Linux", "version": "7.0.1"},
            "usage": {"total_sessions": 1},
        }
        return f"{base}/telemetry", json.dumps(body).encode(), as_json
    if contract == "domscribe":
        body = {
            "protocol_version": "1.0.0",
            "daemon_version": "1.2.3",
            "session_id": install,
            "platform": "linux",
            "node_version": "v22.1.0",
            "primary_framework": "react",
        }
        return f"{base}/v1/session", json.dumps(body).encode(), as_json
    if contract == "baofeng":
        body = {
            "event_type": "flash_error",
            "occurred_at": now.isoformat(),
            "session_id": install,
            "message": "Timeout writing block 3",
        }
        return f"{base}/event", json.dumps(body).encode(), {"Content-Type": "text/plain"}
    if contract == "pryx":
        body = {
            "correlation_id": f"corr-{uid}",
            "timestamp": int(now.timestamp() * 1000),
            "level": "info",
            "category": "provider",
            "device_id": install,
        }
        return f"{base}/api/telemetry/ingest", json.dumps(body).encode(), {**as_json, **key}
    body = [{"_time": now.isoformat(), "event_type": "request", "customer_id": install}]
    return f"{base}/v1/datasets/events/ingest", json.dumps(body).encode(), {**as_json, **key}
