"""Importing the Baofeng flasher's D1 tables: `client_logs` (legacy reports) and
`telemetry_events` (the unified /event), with the flash total continuing from the old one."""

import datetime as dt
import json

import pytest
from django.test import Client
from django.utils import timezone

from telemetry.models import DailyCount, DailySummary, Event
from telemetry.services.imports import ImportFailed
from tests.factories import make_project
from tests.imports.checks import assert_no_ip_hash, assert_rollups_exact, run
from tests.imports.stores import (
    BAOFENG_SCHEMA,
    baofeng_error,
    baofeng_flash,
    write_d1,
)

pytestmark = pytest.mark.django_db
FMT = "baofeng-d1"
DAY = dt.timedelta(days=1)


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def p():
    return make_project(contract="baofeng", retention_days=90)


def store(tmp_path, *, flashes=(), errors=(), dump=False, name="baofeng"):
    path = tmp_path / (f"{name}.sql" if dump else f"{name}.sqlite")
    tables = {"client_logs": list(errors), "telemetry_events": list(flashes)}
    return write_d1(path, BAOFENG_SCHEMA, tables, dump=dump)


def old_worker_total(flashes) -> int:
    """GET /metrics/flash-count on the worker: flashes not seeded as baseline-… plus the
    largest metadata_json.$.baseline_total among the seeding rows."""
    plain = sum(1 for f in flashes if not f["session_id"].startswith("baseline-"))
    seeded = [
        json.loads(f["metadata_json"]).get("baseline_total", 0)
        for f in flashes
        if f["session_id"].startswith("baseline-")
    ]
    return plain + max(seeded, default=0)


def flash_count(client, p) -> int:
    return client.get(f"/p/{p.project.slug}/metrics/flash-count").json()["total"]


@pytest.mark.parametrize("dump", [False, True], ids=["d1-file", "d1-export-dump"])
def test_the_flash_total_continues_from_the_old_one(tmp_path, p, now, client: Client, dump):
    flashes = [
        baofeng_flash(now - 400 * DAY, "baseline-legacy-counter",
                      metadata_json=json.dumps({"baseline_total": 1234})),
        baofeng_flash(now - 200 * DAY, "sess-old-000001"),
        baofeng_flash(now - 120 * DAY, "sess-old-000002"),
        baofeng_flash(now - 10 * DAY, "sess-new-000001"),
        baofeng_flash(now - 1 * DAY, "sess-new-000002"),
    ]  # fmt: skip
    path = store(tmp_path, flashes=flashes, dump=dump)
    report = run(p.project, FMT, path, now)
    assert (report.stored, report.aggregated) == (2, 3)
    assert flash_count(client, p) == old_worker_total(flashes) == 1234 + 4
    run(p.project, FMT, path, now)
    assert flash_count(client, p) == 1238
    # A session the old store already counted is not counted again when it reports live.
    body = {
        "event_type": "flash_success",
        "occurred_at": now.isoformat(),
        "session_id": "sess-new-000002",
        "message": "Flash complete",
    }
    r = client.post(f"/p/{p.project.slug}/event", json.dumps(body), content_type="text/plain")
    assert r.json() == {"ok": True, "deduped": True}
    body["session_id"] = "sess-live-00001"
    client.post(f"/p/{p.project.slug}/event", json.dumps(body), content_type="text/plain")
    assert flash_count(client, p) == 1239
    assert_rollups_exact(p.project)


def test_importing_twice_stores_error_reports_once(tmp_path, p, now):
    errors = [baofeng_error(now - d * DAY) for d in (1, 2, 3)]
    path = store(tmp_path, errors=errors)
    assert run(p.project, FMT, path, now).stored == 3
    second = run(p.project, FMT, path, now)
    assert (second.stored, second.duplicates) == (0, 3)
    stored = set(Event.objects.filter(project=p.project).values_list("event_id", flat=True))
    assert stored == {e["id"] for e in errors}  # the worker's row ids are the dedupe keys
    assert_rollups_exact(p.project)


def test_a_flash_that_also_arrived_live_is_a_duplicate(tmp_path, p, now, client: Client):
    body = {
        "event_type": "flash_success",
        "occurred_at": (now - DAY).isoformat(),
        "session_id": "sess-both-00001",
        "message": "Flash complete",
        "metadata_json": json.dumps({"source": "web-v2"}),
    }
    r = client.post(f"/p/{p.project.slug}/event", json.dumps(body), content_type="text/plain")
    assert r.json() == {"ok": True, "deduped": False}
    # The old store's copy has another time: a flash is one per session, whenever.
    flashes = [baofeng_flash(now - DAY - dt.timedelta(seconds=3), "sess-both-00001")]
    report = run(p.project, FMT, store(tmp_path, flashes=flashes), now)
    assert (report.stored, report.duplicates) == (0, 1)
    assert Event.objects.filter(project=p.project).count() == 1


def test_an_imported_report_is_the_event_the_front_door_stores(tmp_path, p, now, client: Client):
    live = make_project(contract="baofeng", retention_days=90)
    row = baofeng_error(now - DAY)
    body = {k: row[k] for k in ("event_type", "occurred_at", "message", "error_name", "stack",
                                "model", "write_mode", "connected", "app_version",
                                "log_lines_json")}  # fmt: skip
    r = client.post(f"/p/{live.project.slug}/client-log", json.dumps(body), "text/plain")
    assert r.json() == {"ok": True}
    run(p.project, FMT, store(tmp_path, errors=[row]), now)
    fields = ["install_id", "name", "timestamp", "app_version", "os", "properties"]
    assert (
        Event.objects.filter(project=p.project).values(*fields).get()
        == Event.objects.filter(project=live.project).values(*fields).get()
    )


def test_the_old_ip_hashes_are_never_imported(tmp_path, p, now):
    errors = [baofeng_error(now - DAY)]
    run(
        p.project,
        FMT,
        store(tmp_path, errors=errors, flashes=[baofeng_flash(now, "s-ip-0001")]),
        now,
    )
    assert Event.objects.filter(project=p.project).count() == 2
    assert_no_ip_hash(p.project, errors[0]["ip_hash"])


def test_reports_older_than_retention_become_daily_aggregates(tmp_path, p, now):
    old = now - 100 * DAY
    errors = [baofeng_error(old), baofeng_error(old), baofeng_error(now - DAY)]
    report = run(p.project, FMT, store(tmp_path, errors=errors), now)
    assert (report.stored, report.aggregated) == (1, 2)
    summary = DailySummary.objects.get(project=p.project, day=old.date())
    # Error reports carry no install: events only.
    assert (summary.active_installs, summary.new_installs, summary.events) == (0, 0, 2)
    assert DailyCount.objects.get(project=p.project, day=old.date()).name == "connect_error"
    assert not Event.objects.filter(timestamp__lt=now - 90 * DAY).exists()
    assert_rollups_exact(p.project)


def test_rows_the_front_door_refuses_are_reported_not_stored(tmp_path, p, now):
    flashes = [baofeng_flash(now - DAY, "sess-ok-000001"),
               baofeng_flash(now - DAY, None, id="no-session")]  # fmt: skip
    errors = [baofeng_error(now - DAY, log_lines_json="not json")]
    report = run(p.project, FMT, store(tmp_path, flashes=flashes, errors=errors), now)
    assert (report.stored, report.refused) == (1, 2)
    assert report.refusals == [
        {"row": "client_logs row 1", "error": "Invalid payload fields"},
        {"row": "telemetry_events row 2", "error": "Invalid payload fields"},
    ]


def test_a_table_missing_a_column_is_malformed(tmp_path, p, now):
    path = write_d1(
        tmp_path / "old.sqlite", "CREATE TABLE client_logs (id TEXT PRIMARY KEY, message TEXT);", {}
    )
    with pytest.raises(ImportFailed) as exc:
        run(p.project, FMT, path, now)
    assert str(exc.value.error).startswith("table client_logs: missing column(s) received_at_ms")
    assert not Event.objects.exists()
