"""telemetry.services.schedule: the default beat rows, and TaskRun records of every run."""

import datetime as dt

import pytest
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from telemetry.models import IpSalt, TaskRun
from telemetry.services import schedule
from telemetry.services.schedule import ensure_default_schedule, run_job

pytestmark = pytest.mark.django_db


def test_migrate_created_the_default_schedule():
    tasks = {t.task: t for t in PeriodicTask.objects.filter(name__startswith="telemetry: ")}
    assert set(tasks) == {
        "telemetry.tasks.purge_expired",
        "telemetry.tasks.rotate_salts",
        "telemetry.tasks.refresh_aggregates",
        "telemetry.tasks.create_partitions",
        "telemetry.tasks.analyze_events",
        "telemetry.tasks.refresh_cohorts",
        "telemetry.tasks.fold_rollups",
    }
    purge = tasks["telemetry.tasks.purge_expired"].crontab
    assert (purge.minute, purge.hour, str(purge.timezone)) == ("0", "2", "UTC")
    assert tasks["telemetry.tasks.rotate_salts"].crontab.hour == "*"
    fold = tasks["telemetry.tasks.fold_rollups"].interval
    assert (fold.every, fold.period) == (10, "seconds")


def test_it_keeps_an_operators_edits_and_restores_missing_rows():
    purge = PeriodicTask.objects.get(task="telemetry.tasks.purge_expired")
    purge.crontab = CrontabSchedule.objects.create(minute="15", hour="4", timezone="UTC")
    purge.enabled = False
    purge.save()
    PeriodicTask.objects.filter(task="telemetry.tasks.rotate_salts").delete()
    assert ensure_default_schedule() == ["telemetry: rotate salts"]
    purge.refresh_from_db()
    assert (purge.enabled, purge.crontab.hour, purge.crontab.minute) == (False, "4", "15")
    assert PeriodicTask.objects.filter(name__startswith="telemetry: ").count() == 7
    assert ensure_default_schedule() == []


def test_a_run_records_what_it_did():
    now = dt.datetime(2025, 6, 15, 5, tzinfo=dt.UTC)
    run = run_job("rotate_salts", now=now)
    stored = TaskRun.objects.get()
    assert stored.pk == run.pk
    assert (stored.task, stored.ok, stored.rows, stored.error) == ("rotate_salts", True, 2, "")
    assert stored.details == {"created": ["2025-06-15", "2025-06-16"], "destroyed": 0}
    assert stored.finished_at >= stored.started_at
    assert IpSalt.objects.count() == 2


def test_a_failing_run_records_its_error(monkeypatch):
    def broken(now):
        raise RuntimeError("disk full")

    monkeypatch.setitem(
        schedule.JOBS,
        "rotate_salts",
        schedule.JOBS["rotate_salts"].__class__(
            "rotate_salts", "telemetry.tasks.rotate_salts", broken, {}, ""
        ),
    )
    with pytest.raises(RuntimeError):
        run_job("rotate_salts")
    run = TaskRun.objects.get()
    assert (run.ok, run.error) == (False, "RuntimeError: disk full")
    assert run.finished_at is not None
