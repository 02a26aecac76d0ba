"""The Axiom-style front door: IngestStatus for JSON arrays, objects and NDJSON; per-key limits."""

import datetime as dt
import json

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from telemetry.ingest.auth import add_ingest_key
from telemetry.models import Event
from tests.concurrency import burst
from tests.factories import make_project

pytestmark = pytest.mark.django_db

DATASET = "wm_api_usage"
INVALID_DATASET = "invalid dataset name: use 1-128 characters of A-Z a-z 0-9 _ . -"


@pytest.fixture
def p():
    return make_project(contract="axiom")


def url(p, dataset=DATASET):
    return f"/p/{p.project.slug}/v1/datasets/{dataset}/ingest"


def send(client, p, body, key=None, content_type="application/json", path=None, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {key or p.ingest_key}")
    return client.post(path or url(p), data=data, content_type=content_type, **headers)


def request_event(**overrides):
    body = {
        "_time": timezone.now().isoformat().replace("+00:00", "Z"),
        "event_type": "request",
        "request_id": "iad1::abc",
        "domain": "market",
        "route": "/api/market/v1/quotes",
        "method": "GET",
        "status": 200,
        "duration_ms": 41,
        "customer_id": "org_2abcDEF",
        "auth_kind": "clerk_jwt",
        "tier": 2,
        "ua_hash": None,
        "reason": "ok",
    }
    body.update(overrides)
    return body


def status(ingested, failures, processed):
    return {
        "ingested": ingested,
        "failed": len(failures),
        "failures": failures,
        "processedBytes": processed,
        "blocksCreated": 0,
        "walLength": ingested,
    }


def assert_reply(r, code, body):
    assert r.status_code == code
    assert r.content == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert r["Content-Type"] == "application/json"
    assert r["Cache-Control"] == "no-store"


def assert_error(r, code, message):
    assert_reply(r, code, {"message": message, "code": code})


def test_a_json_array_is_ingested_with_ingest_status(client, p):
    events = [request_event(), request_event(event_type="upstream", provider="yahoo")]
    body = json.dumps(events)
    assert_reply(send(client, p, body), 200, status(2, [], len(body.encode())))
    assert sorted(Event.objects.values_list("name", flat=True)) == ["request", "upstream"]


def test_ndjson_is_ingested_line_by_line(client, p):
    lines = [json.dumps(request_event(request_id=f"r{i}")) for i in range(3)]
    body = "\n".join(lines[:2]) + "\n\n" + lines[2] + "\n"
    r = send(client, p, body, content_type="application/x-ndjson")
    assert_reply(r, 200, status(3, [], len(body.encode())))
    assert Event.objects.count() == 3


def test_a_single_object_is_one_event(client, p):
    body = json.dumps(request_event())
    assert_reply(send(client, p, body), 200, status(1, [], len(body)))


def test_an_empty_array_ingests_nothing(client, p):
    assert_reply(send(client, p, "[]"), 200, status(0, [], 2))


def test_the_event_maps_onto_the_stored_row(client, p):
    sent = request_event(_time="2026-01-01T00:00:00Z")
    sent["_time"] = (timezone.now() - dt.timedelta(hours=1)).replace(microsecond=0).isoformat()
    send(client, p, [sent])
    e = Event.objects.get()
    assert e.timestamp == dt.datetime.fromisoformat(sent["_time"])
    assert (e.install_id, e.name, e.event_id, e.os) == ("org_2abcDEF", "request", None, "")
    expected = {k: v for k, v in sent.items() if k != "_time"}
    assert e.properties == {**expected, "dataset": DATASET}


def test_without_event_type_the_dataset_names_the_event(client, p):
    sent = request_event()
    del sent["event_type"], sent["customer_id"]
    send(client, p, [sent])
    e = Event.objects.get()
    assert (e.name, e.install_id) == (DATASET, "")


def test_a_customer_id_outside_the_install_rule_is_hashed(client, p):
    send(client, p, [request_event(customer_id="wk_public widget key/1")])
    install = Event.objects.get().install_id
    assert len(install) == 32 and install != "wk_public widget key/1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-05-01T10:00:00.123456789Z", dt.datetime(2026, 5, 1, 10, 0, 0, 123456, dt.UTC)),
        ("2026-05-01T12:00:00+02:00", dt.datetime(2026, 5, 1, 10, 0, tzinfo=dt.UTC)),
        (1777629600, dt.datetime(2026, 5, 1, 10, 0, tzinfo=dt.UTC)),
        (1777629600123, dt.datetime(2026, 5, 1, 10, 0, 0, 123000, dt.UTC)),
        (1777629600123456789, dt.datetime(2026, 5, 1, 10, 0, 0, 123457, dt.UTC)),
    ],
)
def test_time_accepts_rfc3339_and_epoch_numbers(client, value, expected):
    p = make_project(contract="axiom", retention_days=36500)
    send(client, p, [request_event(_time=value)])
    assert Event.objects.get().timestamp == expected


def test_missing_time_is_the_arrival_time(client, p):
    sent = request_event()
    del sent["_time"]
    before = timezone.now()
    send(client, p, [sent])
    assert before <= Event.objects.get().timestamp <= timezone.now()


def test_bad_events_are_reported_as_failures_and_the_rest_stored(client, p):
    events = [
        request_event(),
        request_event(_time="last tuesday"),
        42,
        request_event(_time="2001-01-01T00:00:00Z"),
        request_event(dataset="other"),
        request_event(),
    ]
    body = json.dumps(events)
    r = send(client, p, body)
    assert r.status_code == 200
    got = r.json()
    assert (got["ingested"], got["failed"], got["walLength"]) == (2, 4, 2)
    assert [f["timestamp"] for f in got["failures"][:1]] == ["last tuesday"]
    assert [f["error"] for f in got["failures"]] == [
        "event 1: _time: RFC 3339 string or epoch number (s, ms, µs or ns)",
        "event 2: event: must be a JSON object",
        "event 3: _time: older than the retention window (90 days)",
        "event 4: dataset: reserved, the dataset is named by the URL",
    ]
    assert Event.objects.count() == 2


# --- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer  ", "Basic abc", "tk_x"])
def test_a_missing_or_malformed_bearer_is_401(client, p, header):
    headers = {} if header is None else {"HTTP_AUTHORIZATION": header}
    r = client.post(url(p), data="[]", content_type="application/json", **headers)
    assert_error(r, 401, "unauthorized: send Authorization: Bearer <ingest key>")


def test_a_wrong_or_foreign_key_is_403(client, p):
    other = make_project(contract="axiom")
    for key in ("tk_unknown", other.ingest_key, p.operator_token):
        r = send(client, p, [request_event()], key=key)
        assert_error(r, 403, "forbidden: the key is unknown, revoked or for another project")
    assert Event.objects.count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_other_media_types_are_415(client, p, content_type):
    r = send(client, p, "[]", content_type=content_type)
    assert_error(r, 415, "unsupported content type: use application/json or application/x-ndjson")


def test_a_body_over_1_mb_is_413(client, p):
    big = json.dumps([request_event(route="x" * 900) for _ in range(1200)])
    assert len(big) > 1024 * 1024
    assert_error(send(client, p, big), 413, "request body too large: at most 1048576 bytes")
    assert Event.objects.count() == 0


@pytest.mark.parametrize("body", ["[{", " ", b"\xff\xfe", "NaN"])
def test_invalid_json_is_400(client, p, body):
    assert_error(send(client, p, body), 400, "invalid JSON body")
    assert Event.objects.count() == 0


def test_an_invalid_ndjson_line_is_400_naming_the_line(client, p):
    body = json.dumps(request_event()) + "\n{broken\n"
    r = send(client, p, body, content_type="application/x-ndjson")
    assert_error(r, 400, "invalid JSON on line 2")
    assert Event.objects.count() == 0


@pytest.mark.parametrize("body", ["42", '"text"', "null"])
def test_a_body_that_is_not_events_is_400(client, p, body):
    assert_error(send(client, p, body), 400, "expected a JSON object or an array of objects")


def test_other_methods_are_405_with_allow(client, p):
    r = client.get(url(p), HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}")
    assert_error(r, 405, "method not allowed")
    assert r["Allow"] == "POST"


@pytest.mark.parametrize("path", ["v1/datasets/x/query", "v1/ingest", "", "v1/datasets//ingest"])
def test_other_paths_are_404(client, p, path):
    r = send(client, p, "[]", path=f"/p/{p.project.slug}/{path}")
    assert_error(r, 404, "not found")


def test_an_invalid_dataset_name_is_400(client, p):
    r = send(client, p, "[]", path=url(p, "bad%20name"))
    assert_error(r, 400, "invalid dataset name: use 1-128 characters of A-Z a-z 0-9 _ . -")


# --- limits, privacy, routing ------------------------------------------------------------------


def test_limits_are_per_key_not_per_ip(client):
    p = make_project(contract="axiom", install_rate="1000/h", ip_rate="3/h")
    second_key = add_ingest_key(p.project)
    events = [request_event(customer_id=None) for _ in range(5)]
    r = send(client, p, events, REMOTE_ADDR="192.0.2.1")
    got = r.json()
    assert (got["ingested"], got["failed"]) == (3, 2)
    assert got["failures"][0]["error"] == "event 3: rate limit exceeded"
    assert 1 <= int(r["Retry-After"]) <= 3600
    r = send(client, p, [request_event()], REMOTE_ADDR="192.0.2.99")
    assert_error(r, 429, "rate limit exceeded")
    assert 1 <= int(r["Retry-After"]) <= 3600
    r = send(client, p, [request_event()], key=second_key, REMOTE_ADDR="192.0.2.1")
    assert r.json()["ingested"] == 1
    assert Event.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_posts_with_one_key_from_many_ips_accept_exactly_the_key_limit():
    p = make_project(contract="axiom", install_rate="1000/h", ip_rate="10/h")

    def one(i):
        event = request_event(customer_id=f"cust_{i:06d}")
        return send(Client(), p, [event], REMOTE_ADDR=f"10.0.{i // 250}.{i % 250 + 1}")

    statuses = [r.status_code for r in burst(50, one)]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 40
    assert Event.objects.count() == 10


def test_no_raw_ip_is_stored(client, p):
    send(client, p, [request_event()], REMOTE_ADDR="203.0.113.41")
    assert "203.0.113.41" not in json.dumps(list(Event.objects.values()), default=str)


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
)
def test_an_unreachable_cache_is_503_and_stores_nothing(client, p):
    r = send(client, p, [request_event()])
    assert_error(r, 503, "service unavailable")
    assert int(r["Retry-After"]) > 0
    assert Event.objects.count() == 0


@override_settings(ALLOWED_HOSTS=["usage.example.test"])
def test_the_projects_hostname_serves_the_axiom_path_at_the_root(client):
    p = make_project(contract="axiom", hostnames=["usage.example.test"])
    body = json.dumps([request_event()])
    r = send(client, p, body, path=f"/v1/datasets/{DATASET}/ingest", HTTP_HOST="usage.example.test")
    assert_reply(r, 200, status(1, [], len(body)))
    assert Event.objects.get().project_id == p.project.pk


def test_text_no_database_can_store_is_a_failure_not_a_server_error(client, p):
    r = send(client, p, [request_event(route="/a\u0000"), request_event()])
    got = r.json()
    assert (got["ingested"], got["failed"]) == (1, 1)
    error = "event 0: event: text with NUL or a lone surrogate cannot be stored"
    assert got["failures"][0]["error"] == error
    assert Event.objects.count() == 1
    assert_error(send(client, p, "[" * 200_000), 400, "invalid JSON body")


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        (f"v1/datasets/{DATASET}/ingest%0A", 404, "not found"),
        ("v1/datasets/events%0A/ingest", 400, INVALID_DATASET),
    ],
)
def test_a_trailing_newline_is_no_route_and_no_dataset(client, p, path, code, message):
    r = send(client, p, "[]", path=f"/p/{p.project.slug}/{path}")
    assert_error(r, code, message)


def test_a_lone_surrogate_in_time_is_reported_with_the_server_time_not_a_503(client, p):
    body = '[{"_time": "\\ud800", "route": "/a"}]'
    r = send(client, p, body)
    got = r.json()
    assert (r.status_code, got["ingested"], got["failed"]) == (200, 0, 1)
    assert got["failures"][0]["timestamp"].endswith("Z")
    assert Event.objects.count() == 0
