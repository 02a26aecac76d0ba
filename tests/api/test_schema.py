"""The OpenAPI schema and its docs page."""

import pytest

pytestmark = pytest.mark.django_db


def test_the_schema_describes_the_events_endpoint(client):
    r = client.get("/api/v1/schema", HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    assert "/api/v1/events" in r.json()["paths"]


def test_the_docs_page_loads_without_a_cdn(client):
    r = client.get("/api/v1/docs")
    assert r.status_code == 200
    assert b"cdn.jsdelivr" not in r.content
