"""With the database unreachable, a real server answers 503 JSON with Retry-After, never 500."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(
        url, data=body, headers=headers or {}, method="POST" if body else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def server_without_database(tmp_path):
    port = free_port()
    dead = free_port()  # nothing listens here
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{dead}/nowhere",
        DATA_DIR=str(tmp_path),
        SECRET_KEY="test-only",
        SECURE_SSL_REDIRECT="0",
    )
    env.pop("REDIS_URL", None)
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
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_ingest_answers_503_json_when_the_database_is_down(server_without_database):
    base = server_without_database
    event = {
        "install_id": "inst_00000001",
        "name": "app.start",
        "timestamp": "2026-11-25T10:00:00Z",
    }
    status, headers, body = request(
        base + "/api/v1/events",
        json.dumps(event).encode(),
        {"Content-Type": "application/json", "Authorization": "Bearer tk_whatever"},
    )
    assert status == 503
    assert json.loads(body)["error"] == "service_unavailable"
    assert int(headers["Retry-After"]) > 0
    assert b"Traceback" not in body


def test_readyz_names_the_database(server_without_database):
    base = server_without_database
    status, _, body = request(base + "/readyz")
    assert status == 503
    assert json.loads(body)["failed"] == ["database"]


def test_liveness_does_not_need_the_database(server_without_database):
    base = server_without_database
    status, _, _body = request(base + "/healthz")
    assert status == 200
