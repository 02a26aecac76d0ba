"""Large imports on PostgreSQL: rows mapped in worker processes, each batch staged with COPY and
stored in one transaction, in file order. What a user sees must not depend on the workers."""

import datetime as dt
import json
import os

import pytest
from django.db import connection
from django.utils import timezone

from telemetry.ingest import pipeline, rollups
from telemetry.models import DailySummary, Event
from telemetry.services import imports, partitions
from telemetry.services.imports import ImportFailed
from tests.factories import make_project
from tests.imports.checks import assert_no_ip_hash, assert_rollups_exact, run
from tests.imports.stores import VOICEMODE_SCHEMA, voicemode_row, write_d1

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
FMT = "voicemode-d1"
DAY = dt.timedelta(days=1)
FIELDS = ["event_id", "install_id", "name", "timestamp", "received_at", "app_version", "os"]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("workers map rows only on PostgreSQL; SQLite imports in one process")


@pytest.fixture
def now():
    return timezone.now()


def installs(n: int) -> list[str]:
    return [f"{i:08x}-0000-4000-8000-000000000000" for i in range(n)]


def history(now: dt.datetime) -> list[dict]:
    """240 rows over 60 days of 12 installs (a third older than a 40-day retention), one of
    them refused by the front door."""
    ids = installs(12)
    rows = [voicemode_row(now - dt.timedelta(hours=6 * n + 1), ids[n % 12]) for n in range(240)]
    rows[7] = voicemode_row(now - DAY, telemetry_id="not-a-uuid")
    return rows


def test_workers_store_what_one_process_stores(tmp_path, now):
    rows = history(now)
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    one = make_project(contract="voicemode", retention_days=40).project
    two = make_project(contract="voicemode", retention_days=40).project
    alone = run(one, FMT, path, now, batch_size=50, workers=1)
    parallel = run(two, FMT, path, now, batch_size=50, workers=2)
    assert {**parallel.as_dict(), "project": ""} == {**alone.as_dict(), "project": ""}
    assert (parallel.rows, parallel.refused, parallel.duplicates) == (240, 1, 0)
    assert parallel.stored + parallel.aggregated == 239
    assert parallel.aggregated > 50 and parallel.aggregated_days > 10
    assert parallel.refusals[0]["error"] == "Invalid telemetry_id format (must be UUID)"
    stored = {
        tuple(e[f] for f in FIELDS): e["properties"]
        for e in Event.objects.filter(project=two).values(*FIELDS, "properties")
    }
    assert stored == {
        tuple(e[f] for f in FIELDS): e["properties"]
        for e in Event.objects.filter(project=one).values(*FIELDS, "properties")
    }
    assert len(stored) == parallel.stored
    assert rollups.pending_rollups() == 0
    assert_rollups_exact(two)
    assert_no_ip_hash(two, rows[0]["client_ip_hash"])
    summaries = DailySummary.objects.filter(project=two).values_list("day", "events")
    assert sorted(summaries) == sorted(
        DailySummary.objects.filter(project=one).values_list("day", "events")
    )


def test_a_second_import_with_workers_stores_nothing(tmp_path, now):
    p = make_project(contract="voicemode", retention_days=90).project
    rows = [voicemode_row(now - dt.timedelta(hours=n + 1), installs(5)[n % 5]) for n in range(120)]
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    first = run(p, FMT, path, now, batch_size=25, workers=2)
    second = run(p, FMT, path, now, batch_size=25, workers=2)
    assert (first.stored, first.duplicates) == (120, 0)
    assert (second.stored, second.duplicates) == (0, 120)
    assert Event.objects.filter(project=p).count() == 120
    assert_rollups_exact(p)


def test_a_row_the_database_refuses_rolls_back_only_its_batch(tmp_path, now, monkeypatch):
    p = make_project(contract="voicemode", retention_days=90).project
    rows = [
        voicemode_row(now - dt.timedelta(hours=200 - n), installs(4)[n % 4]) for n in range(200)
    ]
    # No row the front door would take makes PostgreSQL refuse it (1e400, which did, is now
    # refused as the door refuses it), so this row's staged JSON is spoiled on its way there:
    # the workers fork with the patch.
    rows[120]["usage"] = json.dumps({"total_sessions": 987654321})
    dumps = pipeline._dumps
    monkeypatch.setattr(
        pipeline, "_dumps", lambda v: "Infinity" if "987654321" in dumps(v) else dumps(v)
    )
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    with pytest.raises(ImportFailed) as exc:
        run(p, FMT, path, now, batch_size=50, workers=2)
    report = exc.value.report
    assert exc.value.error.message == "the database refused the batch (DataError)"
    assert exc.value.error.where.startswith("rows 101-")
    # Batches 1-2 (rows 1-100) are stored, with exact rollups; nothing of batch 3 or later.
    assert (report.committed_rows, report.stored) == (100, 100)
    assert Event.objects.filter(project=p).count() == 100
    assert not Event.objects.filter(project=p, timestamp__gte=rows[100]["timestamp"]).exists()
    assert rollups.pending_rollups() == 0
    assert_rollups_exact(p)


def test_the_planner_knows_the_imported_rows_of_each_day(tmp_path, now):
    p = make_project(contract="voicemode", retention_days=90).project
    day = (now - 3 * DAY).replace(hour=12)
    rows = [voicemode_row(day + dt.timedelta(seconds=n), installs(30)[n % 30]) for n in range(90)]
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    run(p, FMT, path, now, batch_size=40, workers=2)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reltuples FROM pg_class WHERE relname IN (%s, %s)",
            [
                partitions.partition_name(day.date()),
                partitions.partition_name(day.date(), partitions.ACTIVITY),
            ],
        )
        estimates = dict(cursor.fetchall())
    # ANALYZE read the whole day: the estimates are the counts (never analysed: -1).
    assert estimates == {
        partitions.partition_name(day.date()): 90,
        partitions.partition_name(day.date(), partitions.ACTIVITY): 30,
    }


def _die(rows):
    os._exit(1)  # a worker killed mid-batch, as the kernel's OOM killer would


def test_a_worker_that_dies_stops_the_import_with_a_clear_error(tmp_path, now, monkeypatch):
    p = make_project(contract="voicemode", retention_days=90).project
    rows = [voicemode_row(now - dt.timedelta(hours=n + 1), installs(3)[n % 3]) for n in range(60)]
    path = write_d1(tmp_path / "vm.sqlite", VOICEMODE_SCHEMA, {"events": rows})
    monkeypatch.setattr(imports, "_map_batch", _die)
    monkeypatch.setattr(imports, "WORKER_TIMEOUT", 3)
    with pytest.raises(ImportFailed) as exc:
        run(p, FMT, path, now, batch_size=20, workers=2)
    assert exc.value.error.message == "a mapping worker gave no answer in 3 s (was it killed?)"
    assert exc.value.report.stored == 0
    assert not Event.objects.filter(project=p).exists()
