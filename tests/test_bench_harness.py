"""bench/harness.py: the one start-up helper of the benchmarks that run servers, and proof that
they do not carry copies of it."""

import ast
import os
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = ["frontdoors.py", "soak.py", "ingest.py", "replica.py"]
START_UP = {"free_port", "start_server", "stop_server", "wait_ready"}


@pytest.fixture
def harness(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import harness

    return harness


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmarks_start_servers_only_through_bench_harness(script):
    tree = ast.parse((BENCH / script).read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert not defined & START_UP, sorted(defined & START_UP)
    popen = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "Popen"
    ]
    assert popen == [], f"{script} starts processes itself (lines {popen})"


@pytest.mark.slow
def test_harness_starts_waits_for_and_stops_a_server(harness, tmp_path):
    port = harness.free_port(range(18900, 19000))
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    proc = harness.start(cmd, env={"PATH": "/usr/bin:/bin"}, log=tmp_path / "server.log")
    try:
        harness.wait_ready(port, proc, path="/", seconds=15)
        assert proc.poll() is None
    finally:
        harness.stop(proc, timeout=5)
    assert proc.returncode is not None


def test_wait_ready_gives_up_when_the_server_dies(harness):
    proc = harness.start([sys.executable, "-c", "raise SystemExit(3)"], env={})
    with pytest.raises(SystemExit, match="exited with 3"):
        harness.wait_ready(1, proc, seconds=10)


def test_pinned_runs_a_command_under_taskset_on_the_given_cpus(harness):
    assert harness.pinned(["wrk", "-t2"], {1, 0}) == ["taskset", "-c", "0,1", "wrk", "-t2"]
    assert harness.pinned(["wrk", "-t2"], [1]) == ["taskset", "-c", "1", "wrk", "-t2"]
    assert harness.pinned(["wrk", "-t2"], None) == ["wrk", "-t2"]
    with pytest.raises(ValueError, match="non-negative"):
        harness.pinned(["wrk"], set())


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_pin_tree_moves_a_process_and_its_children_and_off_cpus_sees_strays(harness):
    cpu, other = sorted(os.sched_getaffinity(0))[:2]
    code = "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    proc = harness.start([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 10
        while not harness.descendants(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = harness.descendants(proc.pid)
        assert harness.pin_tree(proc.pid, {cpu}) == 2
        assert os.sched_getaffinity(child) == {cpu}
        assert harness.off_cpus(proc.pid, {cpu}) == (2, [])
        os.sched_setaffinity(child, {other})
        assert harness.off_cpus(proc.pid, {cpu}) == (2, [child])
    finally:
        harness.stop(proc, timeout=5)


def test_parse_cpu_times_reads_busy_idle_and_steal_per_cpu(harness):
    stat = (
        "cpu  500 0 300 900 100 10 20 30 0 0\n"
        "cpu0 200 0 100 400 100 10 20 30 0 0\n"
        "cpu1 300 0 200 500 0 0 0 0 0 0\n"
        "intr 12345 0 0\n"
    )
    assert harness.parse_cpu_times(stat, ticks=100) == {
        0: {"busy": 3.3, "idle": 5.0, "steal": 0.3},
        1: {"busy": 5.0, "idle": 5.0, "steal": 0.0},
    }
