"""The Celery tasks: each records a TaskRun; one test goes through a real worker and broker."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings

from telemetry import tasks
from telemetry.models import IpSalt, TaskRun
from tests.factories import shared_database_url


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("task", "name"),
    [
        (tasks.purge_expired, "purge"),
        (tasks.rotate_salts, "rotate_salts"),
        (tasks.refresh_aggregates, "refresh_aggregates"),
        (tasks.refresh_cohorts, "refresh_cohorts"),
    ],
)
def test_each_task_records_a_task_run(task, name):
    task.apply()
    run = TaskRun.objects.get()
    assert (run.task, run.ok, run.error) == (name, True, "")
    assert run.finished_at is not None


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_salt_rotation_from_the_broker(tmp_path):
    # A queue of our own: a shared RabbitMQ may have other workers on the default queue.
    queue = f"tm-test-{os.getpid()}"
    env = {**os.environ, "DATABASE_URL": shared_database_url()}
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "--queues",
            queue,
            "--loglevel",
            "INFO",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        tasks.rotate_salts.apply_async(queue=queue)
        deadline = time.monotonic() + 60
        while not TaskRun.objects.filter(task="rotate_salts", finished_at__isnull=False).exists():
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.2)
    finally:
        os.kill(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(5)
        log.close()
    run = TaskRun.objects.get(task="rotate_salts")
    assert run.ok and run.rows == 2
    assert IpSalt.objects.count() == 2
