"""Dashboard pages: access rules, CSP, the numbers shown, explorer and export, public page."""

import csv
import datetime as dt
import io
import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from telemetry.analytics import active, retention
from tests.analytics.data import seeded_project, send
from tests.factories import make_project, native_event

pytestmark = pytest.mark.django_db

PAGES = ["", "retention/", "breakdown/", "errors/", "events/", "setup/"]


@pytest.fixture
def member(client):
    user = get_user_model().objects.create_user("maint", password="pw-123456789")
    client.force_login(user)
    return user


def _inline_scripts(html: str) -> list[str]:
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    return [body for attrs, body in scripts if "application/json" not in attrs and body.strip()]


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_visitor_is_sent_to_the_login_page(client, page):
    p = make_project()
    r = client.get(f"/dashboard/{p.project.slug}/{page}")
    assert r.status_code == 302
    assert r["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("page", [*PAGES, "events/export.csv"])
def test_a_project_you_are_not_a_member_of_is_404(client, member, page):
    p = make_project()
    assert client.get(f"/dashboard/{p.project.slug}/{page}").status_code == 404
    assert client.get(f"/dashboard/no-such/{page}").status_code == 404


@pytest.mark.parametrize("page", PAGES)
def test_member_pages_render_with_a_strict_csp_and_no_inline_script(client, member, page):
    p = seeded_project(client, seed=3, events=200)
    p.project.members.add(member)
    r = client.get(f"/dashboard/{p.project.slug}/{page}")
    assert r.status_code == 200
    assert "script-src 'self'" in r["Content-Security-Policy"]
    html = r.content.decode()
    assert _inline_scripts(html) == []
    assert 'style="' not in html
    assert "/static/vendor/chartjs/chart.umd.min.js" in html


def test_overview_cards_show_the_selector_numbers_and_the_change(client, member):
    p = seeded_project(client, seed=5)
    p.project.members.add(member)
    end = timezone.now().date()
    start = end - dt.timedelta(days=13)
    r = client.get(f"/dashboard/{p.project.slug}/", {"start": start, "end": end})
    html = r.content.decode()
    cur = active.rolling(project=p.project, day=end)
    for card, value in (("dau", cur.dau), ("wau", cur.wau), ("mau", cur.mau)):
        assert f'id="card-{card}">{value}<' in html
    assert "vs previous" in html or "no previous data" in html
    chart = json.loads(re.search(r'id="activity-data"[^>]*>(.*?)</script>', html, re.S)[1])
    assert len(chart["labels"]) == 14
    daily = active.active_series(project=p.project, interval="day", start=start, end=end)
    assert chart["datasets"][0]["data"] == [d.active_installs for d in daily]


def test_empty_project_explains_how_to_send_the_first_event(client, member):
    p = make_project()
    p.project.members.add(member)
    html = client.get(f"/dashboard/{p.project.slug}/").content.decode()
    assert "No events yet" in html
    assert "curl -X POST http://testserver/api/v1/events" in html


def test_retention_page_shows_counts_and_percentages(client, member):
    p = seeded_project(client, seed=7)
    p.project.members.add(member)
    html = client.get(f"/dashboard/{p.project.slug}/retention/").content.decode()
    grid = retention.retention(project=p.project, period="week", cohorts=12, now=timezone.now())
    for c in grid:
        row = re.search(rf'data-cohort="{c.label}">(.*?)</tr>', html, re.S)[1]
        assert re.findall(r'data-n="(\d*)"', row) == [str(n) for n in c.retained]
    assert "Daily cohorts (30 \u00d7 30)" in html


def test_breakdown_page_answers_a_map_property_over_time(client, member):
    p = seeded_project(client, seed=9)
    p.project.members.add(member)
    r = client.get(
        f"/dashboard/{p.project.slug}/breakdown/",
        {"property": "provider_usage.tts", "metric": "events", "interval": "day"},
    )
    html = r.content.decode()
    assert r.status_code == 200
    assert "<td>openai</td>" in html or "<td>kokoro</td>" in html
    chart = json.loads(re.search(r'id="breakdown-data"[^>]*>(.*?)</script>', html, re.S)[1])
    assert chart["kind"] == "line" and len(chart["labels"]) == 30


def test_breakdown_page_shows_the_reason_for_a_bad_property(client, member):
    p = seeded_project(client, seed=9, events=20)
    p.project.members.add(member)
    r = client.get(f"/dashboard/{p.project.slug}/breakdown/", {"property": "install_id"})
    assert r.status_code == 200
    assert "install_id is an identifier" in r.content.decode()


def test_errors_are_grouped_by_type_message_and_first_stack_line(client, member):
    p = make_project(install_rate="1000/h")
    p.project.members.add(member)
    stack = "TypeError: x is undefined\n  at flash (app.js:10)"
    send(
        client,
        p.ingest_key,
        [
            native_event(name="flash_error", properties={"message": "port busy", "stack": stack}),
            native_event(name="flash_error", properties={"message": "port busy", "stack": stack}),
            native_event(name="log", properties={"level": "fatal", "message": "disk full"}),
            native_event(name="log", properties={"level": "info", "message": "hello"}),
            native_event(name="error.crash", properties={"message": "boom"}),
            native_event(name="app.start"),
        ],
    )
    html = client.get(f"/dashboard/{p.project.slug}/errors/").content.decode()
    table = html[html.index('id="errors"') :]
    assert table.count("<tr><td>") == 3
    assert "port busy" in table and "disk full" in table and "boom" in table
    assert "hello" not in table
    assert re.search(
        r"<td>flash_error</td><td>port busy</td>.*?<td class=\"num\">2</td>", table, re.S
    )


def test_explorer_filters_and_exports_the_same_rows(client, member):
    p = make_project(install_rate="1000/h")
    p.project.members.add(member)
    events = [native_event(name="app.start") for _ in range(3)]
    events += [native_event(name="cmd.run", install_id="inst_target01") for _ in range(2)]
    send(client, p.ingest_key, events)
    base = f"/dashboard/{p.project.slug}/events/"
    html = client.get(base, {"install_id": "inst_target01"}).content.decode()
    assert html.count("<code>inst_target01</code>") == 2
    r = client.get(base + "export.csv", {"name": "app.start"})
    assert r.streaming and r["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert rows[0][:3] == ["timestamp", "received_at", "name"]
    assert sorted(r[3] for r in rows[1:]) == sorted(e["install_id"] for e in events[:3])
    r = client.get(base + "export.ndjson", {"install_id": "inst_target01"})
    lines = [json.loads(x) for x in b"".join(r.streaming_content).decode().splitlines()]
    assert [x["name"] for x in lines] == ["cmd.run", "cmd.run"]
    assert all("ip_hash" not in x for x in lines)


def test_the_csv_export_neutralises_formulas_sent_through_the_api(client, member):
    from tests.services.test_exports import FORMULA_START, NASTY, _stored_as_sent

    p = make_project()
    p.project.members.add(member)
    events = [
        native_event(session_id=v, app_version=NASTY[i - 1], os=NASTY[i - 2])
        for i, v in enumerate(NASTY)
    ]
    send(client, p.ingest_key, events)  # checks every event was accepted
    r = client.get(f"/dashboard/{p.project.slug}/events/export.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert len(rows) == len(NASTY)
    for row in rows:
        assert not any(cell.startswith(FORMULA_START) for cell in row.values()), row
    sent = {e["event_id"]: e for e in events}
    for row in rows:
        for field in ("session_id", "app_version", "os"):
            assert _stored_as_sent(row[field], sent[row["event_id"]][field])


def test_public_page_only_when_enabled_and_never_with_ids(client):
    p = seeded_project(client, seed=11, events=100)
    url = f"/public/{p.project.slug}/"
    assert client.get(url).status_code == 404
    p.project.public_page = True
    p.project.property_schema = {"command": {"type": "string", "max_length": 40}}
    p.project.retention_days = 30
    p.project.save()
    r = client.get(url)
    html = r.content.decode()
    assert r.status_code == 200
    assert "<code>command</code>" in html and "kept for 30 days" in html
    assert "inst_" not in html
    assert "script-src 'self'" in r["Content-Security-Policy"]


def test_staff_superuser_sees_every_project_in_the_switcher(client):
    a, b = make_project(), make_project()
    admin = get_user_model().objects.create_superuser("root", password="pw-123456789")
    client.force_login(admin)
    html = client.get(f"/dashboard/{a.project.slug}/").content.decode()
    assert f"/dashboard/{b.project.slug}/" in html


def test_dashboard_index_opens_the_first_project(client, member):
    p = make_project()
    p.project.members.add(member)
    r = client.get("/dashboard/")
    assert r.status_code == 302 and r["Location"] == f"/dashboard/{p.project.slug}/"


def test_project_admin_page_links_to_the_dashboard(client):
    p = make_project()
    admin = get_user_model().objects.create_superuser("root", password="pw-123456789")
    client.force_login(admin)
    html = client.get(f"/admin/telemetry/project/{p.project.pk}/change/").content.decode()
    assert f'href="/dashboard/{p.project.slug}/"' in html


def _public_rows(html: str) -> dict[str, tuple[str, str]]:
    rows = re.findall(
        r"<tr><td>([^<]+)</td><td class=\"num\">([^<]*)</td><td class=\"num\">([^<]*)</td></tr>",
        html,
    )
    return {week: (installs, events) for week, installs, events in rows}


def test_the_public_page_withholds_weeks_under_k_installs_and_leaves_them_out_of_totals(client):
    from tests.factories import ingest_at

    p = make_project()
    p.project.public_page = True
    p.project.save()
    now = timezone.now()
    last_week = now - dt.timedelta(days=7)
    for i in range(6):  # six installs last week: shown
        ingest_at(p.project, last_week, f"inst_many{i:04d}", n=2)
    ingest_at(p.project, now, "inst_lonely01", n=3)  # one install this week: withheld

    def label(moment):
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"

    r = client.get(f"/public/{p.project.slug}/")
    html = r.content.decode()
    rows = _public_rows(html)
    assert rows[label(last_week)] == ("6", "12")
    assert rows[label(now)] == ("&lt; 5", "withheld")
    assert re.search(r"<th>shown weeks</th><td></td><td class=\"num\">12</td>", html)
    assert "fewer than 5 active installs" in html  # the rule, on the page itself
    chart = json.loads(re.search(r'id="public-data"[^>]*>(.*?)</script>', html, re.S)[1])
    i = chart["labels"].index(label(now))
    assert [d["data"][i] for d in chart["datasets"]] == [None, None]
    assert 3 not in chart["datasets"][1]["data"]

    p.project.public_min_installs = 1  # a maintainer may lower k
    p.project.save()
    rows = _public_rows(client.get(f"/public/{p.project.slug}/").content.decode())
    assert rows[label(now)] == ("1", "3")
