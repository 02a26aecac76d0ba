"""telemetry.services.exports: CSV and NDJSON, bounded by receive time, without IP hashes."""

import csv
import datetime as dt
import io
import json

import pytest

from telemetry.services.exports import export_events
from tests.factories import ingest_at, make_project

pytestmark = pytest.mark.django_db

DAY = dt.datetime(2025, 6, 10, 9, tzinfo=dt.UTC)


def test_ndjson_has_one_event_per_line_oldest_first():
    p = make_project().project
    ingest_at(p, DAY + dt.timedelta(hours=1), "inst_bbbb0002", name="app.stop")
    ingest_at(p, DAY, "inst_aaaa0001")
    out = io.StringIO()
    assert export_events(project=p, out=out, fmt="ndjson") == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["install_id"], e["name"]) for e in lines] == [
        ("inst_aaaa0001", "app.start"),
        ("inst_bbbb0002", "app.stop"),
    ]
    assert lines[0]["received_at"] == DAY.isoformat()
    assert "ip_hash" not in lines[0]


def test_csv_has_a_header_and_since_until_bound_receive_time():
    p = make_project().project
    for day in range(3):
        ingest_at(p, DAY + dt.timedelta(days=day), f"inst_day{day}_0001")
    out = io.StringIO()
    n = export_events(
        project=p,
        out=out,
        fmt="csv",
        since=DAY + dt.timedelta(days=1),
        until=DAY + dt.timedelta(days=2),
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert n == 1
    assert [r["install_id"] for r in rows] == ["inst_day1_0001"]
    assert rows[0]["properties"] == "{}"


def test_it_exports_only_the_project_asked_for():
    p, other = make_project().project, make_project().project
    ingest_at(other, DAY, "inst_other001")
    out = io.StringIO()
    assert export_events(project=p, out=out, fmt="ndjson") == 0
    assert out.getvalue() == ""
