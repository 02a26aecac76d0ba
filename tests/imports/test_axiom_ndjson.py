"""Importing an Axiom dataset export (one event per line), as WorldMonitor's gateway sent it."""

import datetime as dt
import json

import pytest
from django.test import Client
from django.utils import timezone

from telemetry.models import DailyCount, Event
from telemetry.services.imports import ImportFailed
from tests.factories import make_project
from tests.imports.checks import assert_no_ip_hash, assert_rollups_exact, run
from tests.imports.stores import axiom_record, write_lines

pytestmark = pytest.mark.django_db
FMT = "axiom-ndjson"
DAY = dt.timedelta(days=1)


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def p():
    return make_project(contract="axiom", retention_days=30)


def test_importing_the_same_export_twice_stores_nothing_the_second_time(tmp_path, p, now):
    path = write_lines(
        tmp_path / "wm_api_usage.ndjson", [axiom_record(now - d * DAY) for d in (1, 2)]
    )
    assert run(p.project, FMT, path, now).stored == 2
    second = run(p.project, FMT, path, now)
    assert (second.stored, second.duplicates) == (0, 2)
    event = Event.objects.filter(project=p.project).first()
    assert event.name == "request" and event.properties["dataset"] == "wm_api_usage"
    assert "_sysTime" not in event.properties
    assert_rollups_exact(p.project)


def test_an_item_that_also_arrived_live_is_a_duplicate(tmp_path, p, now, client: Client):
    record = axiom_record(now - DAY)
    live = {k: v for k, v in record.items() if k != "_sysTime"}
    r = client.post(
        f"/p/{p.project.slug}/v1/datasets/wm_api_usage/ingest",
        json.dumps([live]),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}",
    )
    assert r.json()["ingested"] == 1
    report = run(p.project, FMT, write_lines(tmp_path / "wm_api_usage.ndjson", [record]), now)
    assert (report.stored, report.duplicates) == (0, 1)


def test_raw_client_addresses_are_never_imported(tmp_path, p, now):
    record = axiom_record(now - DAY, ip="198.51.100.23", user_agent="curl/8")
    run(p.project, FMT, write_lines(tmp_path / "wm.ndjson", [record]), now)
    assert_no_ip_hash(p.project, "198.51.100.23")
    assert "ip" not in Event.objects.get(project=p.project).properties


def test_items_older_than_retention_become_daily_aggregates(tmp_path, p, now):
    lines = [axiom_record(now - 40 * DAY), axiom_record(now - 40 * DAY, event_type="upstream"),
             axiom_record(now - DAY)]  # fmt: skip
    report = run(p.project, FMT, write_lines(tmp_path / "wm.ndjson", lines), now)
    assert (report.stored, report.aggregated) == (1, 2)
    old = (now - 40 * DAY).date()
    assert dict(
        DailyCount.objects.filter(project=p.project, day=old).values_list("name", "events")
    ) == {"request": 1, "upstream": 1}
    assert_rollups_exact(p.project)


def test_items_the_project_schema_refuses_are_reported(tmp_path, p, now):
    strict = make_project(contract="axiom")
    strict.project.strict = True
    strict.project.property_schema = {"route": {}}
    strict.project.save()
    lines = [axiom_record(now - DAY), {"route": "/x", "_time": "yesterday"}, {"route": "/y"}]
    report = run(strict.project, FMT, write_lines(tmp_path / "wm.ndjson", lines), now)
    assert (report.stored, report.refused) == (1, 2)
    assert report.refusals[0] == {
        "row": "line 1",
        "error": "properties.event_type: not in the project's schema",
    }
    assert report.refusals[1]["row"] == "line 2"
    assert report.refusals[1]["error"].startswith("_time: ")


def test_a_line_that_is_not_json_is_malformed(tmp_path, p, now):
    path = tmp_path / "wm.ndjson"
    path.write_text(json.dumps(axiom_record(now)) + "\n{oops\n")
    with pytest.raises(ImportFailed) as exc:
        run(p.project, FMT, path, now)
    assert exc.value.error.where == "line 2"
    assert not Event.objects.exists()
