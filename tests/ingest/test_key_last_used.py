"""An ingest key's last use is recorded at ingest, at most once per key per interval."""

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from telemetry.ingest import auth
from telemetry.models import IngestKey
from tests.factories import make_project, native_event


def send(key: str):
    return Client().post(
        "/api/v1/events",
        json.dumps(native_event()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def key_updates(queries) -> int:
    return sum(
        1 for q in queries if q["sql"].startswith("UPDATE") and "telemetry_ingestkey" in q["sql"]
    )


@pytest.mark.django_db
def test_the_first_use_is_recorded_and_the_next_ones_cost_no_write(settings):
    settings.TELEMETRY_KEY_LAST_USED_SECONDS = 300
    p = make_project()
    assert IngestKey.objects.get().last_used_at is None
    with CaptureQueriesContext(connection) as first:
        assert send(p.ingest_key).status_code == 202
    used = IngestKey.objects.get().last_used_at
    assert used is not None and key_updates(first.captured_queries) == 1
    with CaptureQueriesContext(connection) as later:
        for _ in range(5):
            assert send(p.ingest_key).status_code == 202
    assert key_updates(later.captured_queries) == 0
    assert IngestKey.objects.get().last_used_at == used


@pytest.mark.django_db
def test_the_use_is_recorded_again_after_the_interval(settings, monkeypatch):
    settings.TELEMETRY_KEY_LAST_USED_SECONDS = 300
    p = make_project()
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    send(p.ingest_key)
    first = IngestKey.objects.get().last_used_at
    clock[0] += 299
    send(p.ingest_key)
    assert IngestKey.objects.get().last_used_at == first
    clock[0] += 2
    send(p.ingest_key)
    assert IngestKey.objects.get().last_used_at > first


@pytest.mark.django_db
def test_a_refused_key_records_nothing():
    p = make_project()
    assert send("tk_" + "x" * 43).status_code == 403
    assert IngestKey.objects.get(project=p.project).last_used_at is None
