"""A purge SIGKILLed mid-way and run again ends exactly where one uninterrupted run ends."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
from django.apps import apps

from telemetry.models import (
    CohortSummary,
    DailyActivity,
    DailyCount,
    DailySummary,
    Event,
    Install,
    PeriodActivity,
    TaskRun,
)
from telemetry.services import partitions, purge
from telemetry.services.locks import LockBusy
from tests.factories import ingest_at, make_project, shared_database_url

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)
CHANGED = [Event, Install, DailyActivity, PeriodActivity, DailyCount, DailySummary, CohortSummary]

PURGE_SCRIPT = """
import datetime as dt, os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from telemetry.services import purge
purge.DROP_CHUNK = 1  # one day per transaction, so the kill can land between two of them
purge.purge(now=dt.datetime.fromisoformat(os.environ["PURGE_NOW"]), batch_size=3, pause=0.02)
"""


def every_table() -> dict[str, list[dict]]:
    """Every row of every telemetry table, by primary key.

    TaskRun is the run log: a killed run leaves its own unfinished row by design. Summary rows
    the purge creates are compared by their natural key (project, day/week), since a restored
    table does not rewind its id sequence.
    """
    tables = {}
    for m in apps.get_app_config("telemetry").get_models():
        if m is TaskRun:
            continue
        rows = list(m.objects.order_by("pk").values())
        if m in (DailySummary, CohortSummary):
            rows = sorted(
                ({k: v for k, v in r.items() if k != "id"} for r in rows),
                key=lambda r: (r["project_id"], str(r.get("day") or r.get("week_start"))),
            )
        tables[m.__name__] = rows
    return tables


def restore(snapshot: dict[str, list[dict]]) -> None:
    for model in reversed(CHANGED):
        model.objects.all().delete()
    if partitions.partitioned():  # the killed run may have dropped whole days
        partitions.ensure({r["timestamp"].date() for r in snapshot["Event"]})
    for model in CHANGED:
        model.objects.bulk_create(model(**row) for row in snapshot[model.__name__])


def purge_when_free() -> None:
    # The killed holder's lock goes with its process or its server session; allow a moment.
    for _ in range(50):
        try:
            purge.purge(now=NOW)
            return
        except LockBusy:
            time.sleep(0.1)
    raise AssertionError("the killed purge's lock was never released")


@pytest.mark.django_db(transaction=True)
def test_a_killed_purge_run_again_ends_like_an_uninterrupted_one():
    p = make_project(retention_days=30, install_rate="100000/h", ip_rate="100000/h").project
    for day in range(8):
        when = dt.datetime(2025, 5, 1 + day, 8, 0, tzinfo=dt.UTC)
        for i in range(15):
            ingest_at(p, when, f"inst_{i:08d}", n=2)
    for i in range(0, 15, 3):
        ingest_at(p, dt.datetime(2025, 6, 12, 8, 0, tzinfo=dt.UTC), f"inst_{i:08d}")
    DailySummary.objects.create(project=p, day=dt.date(2025, 6, 1), events=7)  # kept as is
    before = every_table()
    old_events = 8 * 15 * 2

    env = {**os.environ, "DATABASE_URL": shared_database_url(), "PURGE_NOW": NOW.isoformat()}
    child = subprocess.Popen([sys.executable, "-c", PURGE_SCRIPT], env=env)
    try:
        deadline = time.monotonic() + 60
        while Event.objects.count() > old_events + 5 - 30:  # let it get well into the events
            assert child.poll() is None, "the purge finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    left = Event.objects.count()
    assert 5 < left < old_events + 5, "the kill did not land mid-way"

    purge_when_free()
    interrupted = every_table()

    restore(before)
    assert every_table() == before
    purge.purge(now=NOW)
    clean = every_table()

    assert interrupted == clean
    assert Event.objects.count() == 5
    assert DailySummary.objects.filter(day__lt=dt.date(2025, 5, 16)).count() == 8
