"""Round trips between two installations: export_events → import_events gives the same events,
and exporting them again gives the same file."""

import csv
import datetime as dt
import io
import json

import pytest
from django.test import Client
from django.utils import timezone

from telemetry.models import Event
from telemetry.services.exports import FIELDS, export_events
from telemetry.services.imports import ImportFailed
from tests.factories import ingest_at, make_project, native_event
from tests.imports.checks import assert_no_ip_hash, assert_rollups_exact, run

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)
FORMATS = [("native-ndjson", "ndjson"), ("native-csv", "csv")]


@pytest.fixture
def now():
    return timezone.now()


def send(client: Client, p, *events) -> None:
    r = client.post(
        "/api/v1/events",
        json.dumps({"events": list(events)}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}",
    )
    assert r.status_code == 202 and r.json()["rejected"] == [], r.json()


def exported(project, fmt) -> str:
    out = io.StringIO()
    export_events(project=project, out=out, fmt=fmt)
    return out.getvalue()


def source_project(client, now):
    a = make_project(retention_days=30)
    send(
        client,
        a,
        native_event(timestamp=(now - 3 * DAY).isoformat()),
        # A value a spreadsheet would run, and an id starting with "-": escaped in CSV.
        native_event(event_id="-starts-with-dash", properties={"formula": "=SUM(A1:A9)"}),
        native_event(session_id="sess-1", properties={"nested": {"list": [1, "two", None]}}),
    )
    ingest_at(a.project, now - DAY, "inst_no_id_0001")  # an event without an id
    return a


@pytest.mark.parametrize("fmt, export_fmt", FORMATS)
def test_export_then_import_round_trips_exactly(tmp_path, client, now, fmt, export_fmt):
    a = source_project(client, now)
    path = tmp_path / f"a.{export_fmt}"
    path.write_text(exported(a.project, export_fmt))
    b = make_project(retention_days=30)
    report = run(b.project, fmt, path, now)
    assert (report.rows, report.stored, report.refused) == (4, 4, 0)
    assert exported(b.project, export_fmt) == path.read_bytes().decode()
    assert_rollups_exact(b.project)
    assert_no_ip_hash(b.project)


@pytest.mark.parametrize("fmt, export_fmt", FORMATS)
def test_importing_an_export_twice_stores_nothing_the_second_time(tmp_path, client, now, fmt,
                                                                   export_fmt):  # fmt: skip
    a = source_project(client, now)
    path = tmp_path / f"a.{export_fmt}"
    path.write_text(exported(a.project, export_fmt))
    b = make_project(retention_days=30)
    run(b.project, fmt, path, now)
    second = run(b.project, fmt, path, now)
    assert (second.stored, second.duplicates) == (0, 4)
    assert Event.objects.filter(project=b.project).count() == 4


def test_events_that_arrived_live_are_duplicates(tmp_path, client, now):
    a = source_project(client, now)
    path = tmp_path / "a.ndjson"
    path.write_text(exported(a.project, "ndjson"))
    report = run(a.project, "native-ndjson", path, now)  # back into the same project
    assert (report.stored, report.duplicates) == (0, 4)


def test_events_older_than_retention_become_aggregates(tmp_path, client, now):
    a = source_project(client, now)
    path = tmp_path / "a.ndjson"
    path.write_text(exported(a.project, "ndjson"))
    short = make_project(retention_days=2)
    report = run(short.project, "native-ndjson", path, now)
    assert (report.stored, report.aggregated) == (3, 1)
    assert_rollups_exact(short.project)


def test_events_the_native_api_refuses_are_reported(tmp_path, now):
    b = make_project()
    good = {**native_event(), "received_at": now.isoformat()}
    path = tmp_path / "x.ndjson"
    path.write_text(
        json.dumps(good) + "\n" + json.dumps({**good, "name": "Bad Name", "event_id": "e" * 9})
    )
    report = run(b.project, "native-ndjson", path, now)
    assert (report.stored, report.refused) == (1, 1)
    assert report.refusals[0]["row"] == "line 2"
    assert report.refusals[0]["error"].startswith("name: required, lowercase")


def test_a_csv_without_the_export_header_is_malformed(tmp_path, now):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ImportFailed) as exc:
        run(make_project().project, "native-csv", path, now)
    assert exc.value.error.where == "line 1"
    assert "expected the export header" in exc.value.error.message


@pytest.mark.parametrize("properties", ['{"x": NaN}', '{"x": 1e400}'])
def test_csv_properties_no_json_column_holds_are_malformed_not_a_refused_batch(
    tmp_path, client, now, properties
):
    # json.loads took both, and PostgreSQL refused the batch; the ndjson lines refuse them.
    a = source_project(client, now)
    rows = list(csv.reader(io.StringIO(exported(a.project, "csv"))))
    rows[1][FIELDS.index("properties")] = properties
    path = tmp_path / "x.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ImportFailed) as exc:
        run(make_project().project, "native-csv", path, now)
    assert (exc.value.error.where, exc.value.error.message) == ("line 2", "properties is not JSON")
    assert exc.value.report.stored == 0
