"""Importing Domscribe's KV session records (JSON lines of {"key", "value"})."""

import datetime as dt
import json

import pytest
from django.test import Client
from django.utils import timezone

from telemetry.contracts.domscribe import iso_week
from telemetry.models import DailySummary, Event
from telemetry.services.imports import ImportFailed
from tests.factories import make_project
from tests.imports.checks import assert_no_ip_hash, assert_rollups_exact, run
from tests.imports.stores import domscribe_record, write_lines

pytestmark = pytest.mark.django_db
FMT = "domscribe-kv"
WEEK = dt.timedelta(days=7)


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def p():
    return make_project(contract="domscribe", retention_days=90)


def records(now, *weeks_ago, session="sess_abcdefgh"):
    return [
        domscribe_record(iso_week(now - w * WEEK), f"{session}{w}", now - w * WEEK)
        for w in weeks_ago
    ]


def test_importing_the_same_records_twice_stores_nothing_the_second_time(tmp_path, p, now):
    path = write_lines(tmp_path / "kv.jsonl", records(now, 1, 2, 3))
    assert run(p.project, FMT, path, now).stored == 3
    second = run(p.project, FMT, path, now)
    assert (second.stored, second.duplicates) == (0, 3)
    week = iso_week(now - WEEK)
    assert Event.objects.filter(event_id=f"dom-{week}-sess_abcdefgh1").exists()
    assert_rollups_exact(p.project)
    assert_no_ip_hash(p.project)


def test_a_session_that_also_arrived_live_is_a_duplicate(tmp_path, p, now, client: Client):
    payload = {
        "protocol_version": "1.0.0",
        "daemon_version": "0.4.2",
        "session_id": "sess_live_0001",
        "platform": "linux",
        "node_version": "v22.3.0",
        "primary_framework": "react",
    }
    r = client.post(f"/p/{p.project.slug}/v1/session", payload, content_type="application/json")
    assert r.status_code == 204
    record = domscribe_record(iso_week(now), "sess_live_0001", now)
    report = run(p.project, FMT, write_lines(tmp_path / "kv.jsonl", [record]), now)
    assert (report.stored, report.duplicates) == (0, 1)
    stored = Event.objects.get(project=p.project)
    assert stored.properties == {
        "protocol_version": "1.0.0",
        "node_version": "v22.3.0",
        "primary_framework": "react",
    }


def test_weeks_older_than_retention_become_daily_aggregates(tmp_path, p, now):
    path = write_lines(tmp_path / "kv.jsonl", records(now, 1, 20, 30))
    report = run(p.project, FMT, path, now)
    assert (report.stored, report.aggregated, report.aggregated_days) == (1, 2, 2)
    assert Event.objects.filter(project=p.project).count() == 1
    days = DailySummary.objects.filter(project=p.project).values_list(
        "active_installs", "new_installs", "events"
    )
    assert list(days) == [(1, 1, 1), (1, 1, 1)]
    assert_rollups_exact(p.project)


def test_records_the_worker_would_refuse_are_reported(tmp_path, p, now):
    week = iso_week(now)
    lines = [
        domscribe_record(week, "sess_ok_00001", now),
        domscribe_record(week, "sess_sunos_01", now, platform="sunos"),
        {"key": "batch:abc", "value": "{}"},
    ]
    report = run(p.project, FMT, write_lines(tmp_path / "kv.jsonl", lines), now)
    assert (report.stored, report.refused) == (1, 2)
    assert report.refusals == [
        {"row": "line 2", "error": "invalid payload"},
        {"row": "line 3", "error": "not a session record (key session:<YYYY-Www>:<session_id>)"},
    ]


def test_a_malformed_line_stops_with_the_batch_in_progress_rolled_back(tmp_path, p, now):
    path = tmp_path / "kv.jsonl"
    good = records(now, 1, 2, 3)
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"key": "session:\n')
    with pytest.raises(ImportFailed) as exc:
        run(p.project, FMT, path, now, batch_size=2)
    assert exc.value.error.where == "line 4"
    assert (exc.value.report.committed_rows, exc.value.report.stored) == (2, 2)
    # Rows 1-2 were a committed batch; row 3 was in progress and left nothing behind.
    assert Event.objects.filter(project=p.project).count() == 2
    assert_rollups_exact(p.project)
