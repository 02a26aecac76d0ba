"""No analytics query outlives its request: past TELEMETRY_ANALYTICS_TIMEOUT_SECONDS the
database cancels it, the API answers a JSON 503 and the page a readable message; never a 500
and never a killed worker."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from telemetry.analytics import db, retention
from tests.factories import make_project

pytestmark = pytest.mark.django_db

SLOW = {
    # Seconds of work on either backend, cancelled long before it ends.
    "postgresql": "SELECT pg_sleep(5)",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000)"
    " SELECT COUNT(*) FROM c",
}


@pytest.fixture
def slow_retention(monkeypatch, settings):
    settings.TELEMETRY_ANALYTICS_TIMEOUT_SECONDS = 0.5

    def slow(**kwargs):
        with db.connection().cursor() as cursor:
            cursor.execute(SLOW[connection.vendor])
        return []

    monkeypatch.setattr(retention, "retention", slow)


def test_api_answers_503_json_when_the_query_runs_past_the_deadline(client, slow_retention):
    p = make_project()
    t0 = time.monotonic()
    r = client.get(
        f"/api/v1/projects/{p.project.slug}/retention",
        HTTP_AUTHORIZATION=f"Bearer {p.operator_token}",
    )
    assert time.monotonic() - t0 < 3
    assert r.status_code == 503
    assert r.json() == {
        "error": "query_timeout",
        "detail": "this query needed more than 0.5 s; ask for a shorter range or fewer cohorts",
    }
    assert r["Retry-After"] == "30"
    assert r["Cache-Control"] == "no-store"


def test_page_explains_and_offers_a_shorter_range(client, slow_retention, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    p = make_project()
    user = get_user_model().objects.create_user("maint", password="pw-123456789")
    p.project.members.add(user)
    client.force_login(user)
    r = client.get(f"/dashboard/{p.project.slug}/retention/")
    assert r.status_code == 503
    body = r.content.decode()
    assert "This page took too long" in body
    assert "more than 0.5 seconds" in body
    assert f"/dashboard/{p.project.slug}/retention/?start=" in body
    # The connection is usable afterwards: the cancelled transaction was rolled back.
    assert get_user_model().objects.filter(username="maint").exists()


def test_a_request_past_its_deadline_runs_no_further_statement(settings):
    settings.TELEMETRY_ANALYTICS_TIMEOUT_SECONDS = 0.2
    project = make_project().project
    with pytest.raises(db.AnalyticsTimeout), db.reading():
        time.sleep(0.3)
        retention.retention(project=project, period="week", cohorts=12, now=project.created_at)
