"""50-way concurrent bursts on the front doors whose own tests do not cover that limit yet:
exactly the limit is accepted per install id and per client IP, and a duplicate event id sent
concurrently is stored once. (Covered elsewhere: native in tests/ingest/test_limits.py, the rest
in tests/contracts/. Domscribe's install limit cannot be reached: one session is one event per
week. Axiom events carry no event id, so there is nothing to dedupe.)
"""

import json
import uuid

import pytest
from django.test import Client
from django.utils import timezone

from telemetry.models import Event
from tests.concurrency import burst
from tests.factories import make_project

N = 50
LIMIT = 7


def post(contract: str, p, *, install: str, ip: str, event_id: str | None = None):
    now = timezone.now()
    uid = event_id or uuid.uuid4().hex
    headers = {"REMOTE_ADDR": ip, "HTTP_AUTHORIZATION": f"Bearer {p.ingest_key}"}
    if contract == "voicemode":
        path, ctype = "telemetry", "application/json"
        body = {
            "event_id": uid[:32],
            "telemetry_id": install,
            "timestamp": now.isoformat(),
            "environment": {"os": "Linux", "version": "7.0.1"},
            "usage": {"total_sessions": 1},
        }
    elif contract == "baofeng":
        path, ctype = "event", "text/plain"
        body = {
            "event_type": "flash_error",
            "occurred_at": now.isoformat(),
            "session_id": install,
            "message": "Timeout writing block 3",
        }
    elif contract == "pryx":
        path, ctype = "api/telemetry/ingest", "application/json"
        body = {
            "correlation_id": f"corr-{uid}"[:64],
            "timestamp": int(now.timestamp() * 1000),
            "level": "info",
            "category": "provider",
            "device_id": install,
        }
    else:
        path, ctype = "v1/datasets/events/ingest", "application/json"
        body = [{"_time": now.isoformat(), "event_type": "request", "customer_id": install}]
    r = Client().post(
        f"/p/{p.project.slug}/{path}", data=json.dumps(body), content_type=ctype, **headers
    )
    return r.status_code


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("contract", ["voicemode", "pryx"])
def test_fifty_concurrent_events_from_one_ip_accept_exactly_the_ip_limit(contract):
    p = make_project(contract=contract, install_rate="1000/h", ip_rate=f"{LIMIT}/h")
    statuses = burst(
        N, lambda i: post(contract, p, install=_install(contract, i), ip="203.0.113.50")
    )
    assert statuses.count(200) == LIMIT, statuses
    assert statuses.count(429) == N - LIMIT
    assert Event.objects.count() == LIMIT


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("contract", ["baofeng", "axiom"])
def test_fifty_concurrent_events_of_one_install_accept_exactly_the_install_limit(contract):
    p = make_project(contract=contract, install_rate=f"{LIMIT}/h", ip_rate="100000/h")
    install = _install(contract, 0)
    statuses = burst(N, lambda i: post(contract, p, install=install, ip=f"198.51.100.{i + 1}"))
    assert statuses.count(200) == LIMIT, statuses
    assert statuses.count(429) == N - LIMIT
    assert Event.objects.count() == LIMIT


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_copies_of_one_pryx_event_are_stored_once():
    p = make_project(contract="pryx")
    event_id = uuid.uuid4().hex
    statuses = burst(
        N,
        lambda i: post(
            "pryx", p, install="dev_00000001", ip=f"198.51.100.{i + 1}", event_id=event_id
        ),
    )
    assert statuses == [200] * N
    assert Event.objects.count() == 1


def _install(contract: str, i: int) -> str:
    if contract == "voicemode":
        return str(uuid.UUID(int=i + 1))
    return f"inst_{i:08d}"
