"""import_events: the report as text and JSON, --dry-run, and exit code 1 with a clear message."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from telemetry.models import DailySummary, Event
from tests.factories import make_project
from tests.imports.stores import VOICEMODE_SCHEMA, voicemode_row, write_d1

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


def run(*args) -> str:
    out = StringIO()
    call_command("import_events", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def vm(tmp_path):
    now = timezone.now()
    p = make_project(slug="voicemode", contract="voicemode", retention_days=30)
    rows = [
        voicemode_row(now - DAY),
        voicemode_row(now - 2 * DAY),
        voicemode_row(now - 40 * DAY),
        voicemode_row(now - DAY, telemetry_id="nope"),
    ]
    return p, write_d1(tmp_path / "events.sqlite", VOICEMODE_SCHEMA, {"events": rows})


def test_it_prints_what_was_stored_refused_and_aggregated(vm):
    _p, path = vm
    text = run("voicemode", "--format", "voicemode-d1", str(path))
    assert "rows read:   4" in text
    assert "new events:  2 (were stored)" in text
    assert "refused:     1" in text
    assert "aggregated:  1 rows before" in text
    assert "refused events row 4: Invalid telemetry_id format (must be UUID)" in text
    assert Event.objects.count() == 2


def test_workers_report_what_one_process_reports(vm):
    _p, path = vm
    text = run("voicemode", "--format", "voicemode-d1", str(path), "--workers", "2")
    assert "new events:  2 (were stored)" in text
    assert "refused events row 4: Invalid telemetry_id format (must be UUID)" in text
    again = run("voicemode", "--format", "voicemode-d1", str(path), "--workers", "1")
    assert "duplicates:  2 (already stored)" in again
    assert Event.objects.count() == 2


def test_json_reports_the_same_and_a_second_run_finds_duplicates(vm):
    _p, path = vm
    first = json.loads(run("voicemode", "--format", "voicemode-d1", str(path), "--json"))
    assert {k: first[k] for k in ("rows", "stored", "duplicates", "refused", "aggregated")} == {
        "rows": 4,
        "stored": 2,
        "duplicates": 0,
        "refused": 1,
        "aggregated": 1,
    }
    second = json.loads(run("voicemode", "--format", "voicemode-d1", str(path), "--json"))
    assert (second["stored"], second["duplicates"]) == (0, 2)


def test_dry_run_writes_nothing(vm):
    _p, path = vm
    report = json.loads(
        run("voicemode", "--format", "voicemode-d1", str(path), "--dry-run", "--json")
    )
    assert (report["dry_run"], report["stored"], report["aggregated"]) == (True, 2, 1)
    assert not Event.objects.exists() and not DailySummary.objects.exists()
    assert "Nothing was written." in run(
        "voicemode", "--format", "voicemode-d1", str(path), "--dry-run"
    )


def test_a_malformed_file_exits_1_naming_the_line_and_how_far_it_got(tmp_path):
    make_project(slug="kv", contract="domscribe")
    path = tmp_path / "kv.jsonl"
    path.write_text('{"key": "session:2026-W22:abcdefgh", "value": "{}"}\nnot json\n')
    with pytest.raises(CommandError) as exc:
        run("kv", "--format", "domscribe-kv", str(path))
    assert exc.value.returncode == 1
    message = str(exc.value)
    assert f"{path}: line 2: not JSON" in message
    assert "Nothing was imported." in message


def test_a_malformed_file_keeps_the_batches_before_it_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("telemetry.services.imports.BATCH_SIZE", 2)
    make_project(slug="kv", contract="domscribe")
    week = timezone.now().strftime("%G-W%V")
    lines = [
        json.dumps({"key": f"session:{week}:session{i:04d}", "value": json.dumps(VALUE)})
        for i in range(3)
    ]
    path = tmp_path / "kv.jsonl"
    path.write_text("\n".join([*lines, "{"]) + "\n")
    with pytest.raises(CommandError) as exc:
        run("kv", "--format", "domscribe-kv", str(path))
    assert str(exc.value) == (
        f"{path}: line 4: not JSON (Expecting property name enclosed in double quotes at"
        " column 2). Stopped there: the first 2 rows are imported (2 events stored,"
        " 0 already there); the batch in progress (row 3) was rolled back and no aggregates"
        " were written. Fix the file and run again: rows already stored are recognised as"
        " duplicates."
    )
    assert Event.objects.count() == 2


VALUE = {
    "protocol_version": "1.0.0",
    "daemon_version": "0.4.2",
    "platform": "linux",
    "node_version": "v22.3.0",
    "primary_framework": "react",
    "first_seen_at": "2026-05-25T10:00:00.000Z",
}


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "--format", "voicemode-d1", "x"], "no project with slug 'nope'"),
        (["voicemode", "--format", "voicemode-d1", "/no/such/file"], "/no/such/file: no such"),
        (["voicemode", "--format", "voicemode-d1", "x", "--workers", "0"], "--workers must be 1"),
    ],
)
def test_bad_arguments_exit_1_with_a_clear_message(vm, args, message):
    with pytest.raises(CommandError) as exc:
        run(*args)
    assert message in str(exc.value)
