"""Importing VoiceMode's D1 `events` table (a local D1 file or a `wrangler d1 export` dump)."""

import datetime as dt
import hashlib
import json

import pytest
from django.test import Client
from django.utils import timezone

from telemetry.imports import Malformed
from telemetry.models import DailyActivity, DailyCount, DailySummary, Event, Install
from telemetry.services.imports import ImportFailed
from tests.factories import make_project
from tests.imports.checks import assert_no_ip_hash, assert_rollups_exact, run
from tests.imports.stores import VOICEMODE_SCHEMA, voicemode_row, write_d1

pytestmark = pytest.mark.django_db
FMT = "voicemode-d1"
DAY = dt.timedelta(days=1)


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def p():
    return make_project(contract="voicemode", retention_days=30)


def store(tmp_path, rows, *, dump=False):
    name = "voicemode.sql" if dump else "voicemode.sqlite"
    return write_d1(tmp_path / name, VOICEMODE_SCHEMA, {"events": rows}, dump=dump)


@pytest.mark.parametrize("dump", [False, True], ids=["d1-file", "d1-export-dump"])
def test_importing_the_same_store_twice_stores_nothing_the_second_time(tmp_path, p, now, dump):
    rows = [voicemode_row(now - d * DAY) for d in (1, 2, 3)]
    path = store(tmp_path, rows, dump=dump)
    first = run(p.project, FMT, path, now)
    assert (first.rows, first.stored, first.duplicates, first.refused) == (3, 3, 0, 0)
    second = run(p.project, FMT, path, now)
    assert (second.stored, second.duplicates) == (0, 3)
    assert Event.objects.filter(project=p.project).count() == 3
    assert_rollups_exact(p.project)


def test_an_imported_row_is_the_event_the_front_door_stores(tmp_path, p, now, client: Client):
    live = make_project(contract="voicemode", retention_days=30)
    row = voicemode_row(now - DAY)
    payload = {
        "event_id": row["event_id"],
        "telemetry_id": row["telemetry_id"],
        "timestamp": row["timestamp"],
        "environment": json.loads(row["environment"]),
        "usage": json.loads(row["usage"]),
    }
    r = client.post(f"/p/{live.project.slug}/telemetry", payload, content_type="application/json")
    assert r.status_code == 200
    run(p.project, FMT, store(tmp_path, [row]), now)
    fields = ["event_id", "install_id", "name", "timestamp", "app_version", "os", "properties"]
    imported = Event.objects.filter(project=p.project).values(*fields).get()
    assert imported == Event.objects.filter(project=live.project).values(*fields).get()
    received = Event.objects.get(project=p.project).received_at
    assert received == dt.datetime.fromisoformat(row["created_at"])  # the worker's created_at


def test_a_row_that_also_arrived_live_is_a_duplicate(tmp_path, p, now, client: Client):
    row = voicemode_row(now - dt.timedelta(hours=3))
    payload = {**row, "environment": json.loads(row["environment"])}
    payload["usage"] = json.loads(row["usage"])
    r = client.post(f"/p/{p.project.slug}/telemetry", payload, content_type="application/json")
    assert r.json() == {"status": "ok", "event_id": row["event_id"]}
    report = run(p.project, FMT, store(tmp_path, [row, voicemode_row(now - DAY)]), now)
    assert (report.stored, report.duplicates) == (1, 1)
    assert Event.objects.filter(project=p.project).count() == 2
    assert_rollups_exact(p.project)


def test_the_old_ip_hashes_are_never_imported(tmp_path, p, now):
    rows = [voicemode_row(now - d * DAY) for d in (1, 2)]
    run(p.project, FMT, store(tmp_path, rows), now)
    assert Event.objects.filter(project=p.project).count() == 2
    assert_no_ip_hash(p.project, rows[0]["client_ip_hash"])


def test_rows_older_than_retention_are_kept_as_anonymous_daily_aggregates(tmp_path, p, now):
    old_install = "11111111-2222-4333-8444-555555555555"
    both = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    old_day = (now - 45 * DAY).date()
    rows = [
        voicemode_row(now - 45 * DAY, old_install),
        voicemode_row(now - 45 * DAY + dt.timedelta(minutes=5), old_install),
        voicemode_row(now - 45 * DAY, both),
        voicemode_row(now - 2 * DAY, both),
    ]
    report = run(p.project, FMT, store(tmp_path, rows), now)
    assert (report.stored, report.aggregated, report.aggregated_days) == (1, 3, 1)
    # The old install left no id behind: no event, install or activity row.
    assert not Event.objects.filter(install_id=old_install).exists()
    assert not Install.objects.filter(install_id=old_install).exists()
    assert not DailyActivity.objects.filter(day__lt=now.date() - 30 * DAY).exists()
    summary = DailySummary.objects.get(project=p.project, day=old_day)
    # `both` is active that day, but counted new by its Install row (kept), never twice.
    assert (summary.active_installs, summary.new_installs, summary.events) == (2, 1, 3)
    count = DailyCount.objects.get(project=p.project, day=old_day)
    assert (count.name, count.events) == ("telemetry", 3)
    assert_rollups_exact(p.project)
    # A second import leaves the aggregates as they are.
    run(p.project, FMT, store(tmp_path / "..", rows), now)
    summary.refresh_from_db()
    assert (summary.active_installs, summary.new_installs, summary.events) == (2, 1, 3)
    assert DailyCount.objects.get(project=p.project, day=old_day).events == 3


def test_rows_the_front_door_refuses_are_reported_not_stored(tmp_path, p, now):
    rows = [
        voicemode_row(now - DAY),
        voicemode_row(now - DAY, telemetry_id="not-a-uuid"),
        voicemode_row(now - DAY, usage=json.dumps({"transport_usage": {}})),
        voicemode_row(now + 3 * DAY),
    ]
    report = run(p.project, FMT, store(tmp_path, rows), now)
    assert (report.stored, report.refused) == (1, 3)
    assert report.refusals == [
        {"row": "events row 2", "error": "Invalid telemetry_id format (must be UUID)"},
        {"row": "events row 3", "error": "Invalid or missing usage.total_sessions"},
        {"row": "events row 4", "error": "Timestamp too far in the future"},
    ]
    assert Event.objects.filter(project=p.project).count() == 1


def test_a_malformed_dump_names_its_line_and_imports_nothing(tmp_path, p, now):
    path = store(tmp_path, [voicemode_row(now - d * DAY) for d in (1, 2, 3)], dump=True)
    lines = path.read_text().splitlines()
    broken = next(i for i, line in enumerate(lines) if line.startswith("INSERT")) + 1
    lines[broken] = lines[broken][:40]  # cut off mid-row: the statement never ends
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportFailed) as exc:
        run(p.project, FMT, path, now)
    assert exc.value.error.where == f"line {broken + 1}"
    assert exc.value.report.stored == 0
    assert not Event.objects.exists()


def test_a_database_without_the_events_table_is_malformed(tmp_path, p, now):
    path = write_d1(tmp_path / "other.sqlite", "CREATE TABLE things (id TEXT);", {})
    with pytest.raises(ImportFailed) as exc:
        run(p.project, FMT, path, now)
    assert str(exc.value.error) == "table events: missing"
    assert isinstance(exc.value.error, Malformed)


def test_a_dry_run_reports_and_writes_nothing(tmp_path, p, now):
    rows = [voicemode_row(now - DAY), voicemode_row(now - 40 * DAY)]
    path = store(tmp_path, rows)
    report = run(p.project, FMT, path, now, dry_run=True)
    assert (report.stored, report.aggregated, report.dry_run) == (1, 1, True)
    assert not Event.objects.exists() and not DailySummary.objects.exists()
    run(p.project, FMT, path, now)
    again = run(p.project, FMT, path, now, dry_run=True)
    assert (again.stored, again.duplicates) == (0, 1)


def test_the_row_hash_of_an_event_id_is_the_clients(tmp_path, p, now):
    # VoiceMode's client derives event_id from telemetry_id and timestamp: kept as is.
    row = voicemode_row(now - DAY)
    run(p.project, FMT, store(tmp_path, [row]), now)
    expected = hashlib.sha256(f"{row['telemetry_id']}:{row['timestamp']}".encode()).hexdigest()
    assert Event.objects.get().event_id == expected[:16]


def test_text_with_tabs_newlines_backslashes_and_escapes_is_stored_as_sent(tmp_path, p, now):
    environment = {
        "os": "Linux",
        "version": "7.0.1",
        "mcp_host": "tab\there\nnew line\r\\back\\slash \\N é ✓ 😀",
        "exec_source": '"quoted" \\t not a tab',
    }
    row = voicemode_row(now - DAY, environment=json.dumps(environment))
    escaped = voicemode_row(now - 2 * DAY, environment=json.dumps(environment, ensure_ascii=False))
    report = run(p.project, FMT, store(tmp_path, [row, escaped]), now)
    assert (report.stored, report.refused) == (2, 0)
    for event in Event.objects.filter(project=p.project):
        assert event.properties["environment"] == environment


@pytest.mark.parametrize(
    ("environment", "stored"),
    [
        ('{"os": "Linux", "version": "7.0.1", "note": "caf\\u00e9"}', True),
        ('{"os": "Linux", "version": "7.0.1", "note": "nul \\u0000 here"}', False),
        ('{"os": "Linux", "version": "7.0.1", "note": "half \\ud83d pair"}', False),
        ('{"os": "Linux", "version": "7.0.1", "deep": ' + "[" * 13 + "]" * 13 + "}", True),
        ('{"os": "Linux", "version": "7.0.1", "deep": ' + "[" * 15 + "]" * 15 + "}", False),
    ],
    ids=["escaped-letter", "escaped-nul", "lone-surrogate", "nested-14", "nested-16"],
)
def test_text_no_column_can_hold_is_refused_as_the_front_door_refuses_it(
    tmp_path, p, now, environment, stored
):
    report = run(
        p.project, FMT, store(tmp_path, [voicemode_row(now - DAY, environment=environment)]), now
    )
    if stored:
        assert (report.stored, report.refused) == (1, 0)
    else:
        assert report.refusals == [{"row": "events row 1", "error": "Invalid JSON"}]
        assert not Event.objects.exists()


@pytest.mark.parametrize(
    "column, value",
    [("event_id", "abc\x00def12345"), ("telemetry_id", "\x00"), ("timestamp", "\x00")],
    ids=["nul-in-id", "nul-install", "nul-timestamp"],
)
def test_a_plain_column_no_database_text_holds_is_refused_as_the_front_door_refuses_it(
    tmp_path, p, now, column, value
):
    # The front door reads these from a JSON body, where only an escape can make them: it
    # answers "Invalid JSON" before looking at any field, and so does the import.
    rows = [voicemode_row(now - DAY), voicemode_row(now - DAY, **{column: value})]
    report = run(p.project, FMT, store(tmp_path, rows), now)
    assert (report.stored, report.refused) == (1, 1)
    assert report.refusals == [{"row": "events row 2", "error": "Invalid JSON"}]
    assert Event.objects.count() == 1


@pytest.mark.parametrize(
    "usage", ['{"total_sessions": NaN}', '{"total_sessions": -Infinity}', "[" * 2000 + "]" * 2000]
)
def test_json_text_the_front_door_cannot_read_is_refused_not_a_failed_batch(
    tmp_path, p, now, usage
):
    # The front door's parser refuses NaN, Infinity and absurd nesting in a body; the import
    # refuses such a row, and stores the others (json.loads took NaN, and the batch failed).
    rows = [voicemode_row(now - DAY), voicemode_row(now - DAY, usage=usage)]
    report = run(p.project, FMT, store(tmp_path, rows), now)
    assert (report.stored, report.refused) == (1, 1)
    assert report.refusals == [
        {"row": "events row 2", "error": "environment and usage must be JSON text"}
    ]
    assert Event.objects.filter(project=p.project).count() == 1
