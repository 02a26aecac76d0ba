"""GET /api/v1/projects/<slug>/active|retention|breakdown: auth, bad input, and the numbers."""

import datetime as dt
from collections import defaultdict

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from telemetry.analytics import active, retention
from telemetry.models import Event
from tests.analytics.data import Brute, seeded_project

pytestmark = pytest.mark.django_db


def get(client, url, token=None, **params):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get(url, params, **headers)


def test_active_series_by_week_with_the_operator_token(client):
    p = seeded_project(client, seed=61)
    end = timezone.now().date()
    start = end - dt.timedelta(days=75)
    r = get(
        client,
        f"/api/v1/projects/{p.project.slug}/active",
        p.operator_token,
        interval="week",
        start=start.isoformat(),
        end=end.isoformat(),
    )
    assert r.status_code == 200
    body = r.json()
    expect = active.active_series(project=p.project, interval="week", start=start, end=end)
    assert body["interval"] == "week"
    assert body["series"] == [
        {
            "period": s.label,
            "active_installs": s.active_installs,
            "new_installs": s.new_installs,
            "events": s.events,
        }
        for s in expect
    ]
    assert body["series"][0]["period"].count("-W") == 1
    assert sum(s["events"] for s in body["series"]) == 600


def test_retention_grid_for_a_logged_in_member(client):
    p = seeded_project(client, seed=67, days=21)  # every install first seen in the last 4 weeks
    user = get_user_model().objects.create_user("maint", password="pw-123456789")
    p.project.members.add(user)
    client.force_login(user)
    r = get(client, f"/api/v1/projects/{p.project.slug}/retention", period="week", cohorts="4")
    assert r.status_code == 200
    grid = retention.retention(project=p.project, period="week", cohorts=4, now=timezone.now())
    assert r.json() == {
        "period": "week",
        "cohorts": [{"cohort": c.label, "size": c.size, "retained": c.retained} for c in grid],
    }
    # The numbers themselves, counted from the raw events (an empty grid would pass the above).
    brute = Brute(p.project)
    cohorts = r.json()["cohorts"]
    assert len(cohorts) == 4 and sum(c["size"] for c in cohorts) > 0
    for c in cohorts:
        year, week = map(int, c["cohort"].split("-W"))
        start = dt.date.fromisocalendar(year, week, 1)
        assert c["size"] == brute.cohort(start, 7, 0)
        for k, n in enumerate(c["retained"]):
            if n is not None:
                assert n == brute.cohort(start, 7, k), (c["cohort"], k)


def test_breakdown_of_a_map_valued_property_with_a_daily_series(client):
    p = seeded_project(client, seed=71, days=5)
    r = get(
        client,
        f"/api/v1/projects/{p.project.slug}/breakdown",
        p.operator_token,
        property="provider_usage.tts",
        metric="events",
        interval="day",
    )
    assert r.status_code == 200
    body = r.json()
    total = defaultdict(int)
    for e in Event.objects.filter(project=p.project):
        for provider, n in e.properties.get("provider_usage", {}).get("tts", {}).items():
            total[provider] += n
    assert total  # the seed really sent provider usage
    assert {row["key"]: row["value"] for row in body["rows"]} == total
    assert len(body["series"]) == 30
    assert body["metric"] == "events"


def test_anonymous_caller_gets_401_with_a_bearer_challenge(client):
    p = seeded_project(client, seed=1, events=5)
    r = get(client, f"/api/v1/projects/{p.project.slug}/active")
    assert r.status_code == 401
    assert r.json()["error"] == "not_authenticated"
    assert r["WWW-Authenticate"].startswith("Bearer")


def test_wrong_token_is_401_and_another_projects_token_too(client):
    p = seeded_project(client, seed=2, events=5)
    other = seeded_project(client, seed=3, events=5)
    for token in ("op_nope", other.operator_token):
        r = get(client, f"/api/v1/projects/{p.project.slug}/retention", token)
        assert r.status_code == 401


def test_non_member_and_unknown_project_get_the_same_404(client):
    p = seeded_project(client, seed=4, events=5)
    user = get_user_model().objects.create_user("stranger", password="pw-123456789")
    client.force_login(user)
    for slug in (p.project.slug, "no-such-project"):
        r = get(client, f"/api/v1/projects/{slug}/active")
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"


def test_staff_superuser_reads_every_project(client):
    p = seeded_project(client, seed=5, events=5)
    admin = get_user_model().objects.create_superuser("root", password="pw-123456789")
    client.force_login(admin)
    assert get(client, f"/api/v1/projects/{p.project.slug}/active").status_code == 200


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("active", {"interval": "year"}, "invalid_interval"),
        ("active", {"start": "2026-13-01"}, "invalid_date"),
        ("active", {"end": "yesterday"}, "invalid_date"),
        ("active", {"start": "2026-05-02", "end": "2026-05-01"}, "invalid_range"),
        ("active", {"end": "0001-01-01"}, "invalid_range"),
        ("breakdown", {"property": "name", "end": "0001-01-01"}, "invalid_range"),
        ("retention", {"period": "month"}, "invalid_interval"),
        ("retention", {"cohorts": "-3"}, "invalid_cohorts"),
        ("breakdown", {}, "invalid_property"),
        ("breakdown", {"property": "install_id"}, "invalid_property"),
        ("breakdown", {"property": "nothing.here"}, "unknown_property"),
        ("breakdown", {"property": "name", "metric": "max:x"}, "invalid_metric"),
        ("breakdown", {"property": "name", "interval": "hour"}, "invalid_interval"),
    ],
)
def test_bad_input_is_a_400_naming_what_to_fix(client, path, params, code):
    p = seeded_project(client, seed=6, events=20)
    r = get(client, f"/api/v1/projects/{p.project.slug}/{path}", p.operator_token, **params)
    assert r.status_code == 400
    assert r.json()["error"] == code
    assert r.json()["detail"]


def test_a_huge_range_is_clamped_not_refused(client):
    p = seeded_project(client, seed=8, events=20)
    r = get(
        client,
        f"/api/v1/projects/{p.project.slug}/active",
        p.operator_token,
        start="1990-01-01",
        interval="day",
    )
    assert r.status_code == 200
    assert len(r.json()["series"]) == 400


def test_analytics_endpoints_are_in_the_openapi_schema(client):
    r = client.get("/api/v1/schema", HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    text = r.content.decode()
    for path in ("active", "retention", "breakdown"):
        assert f"/api/v1/projects/{{slug}}/{path}" in text
