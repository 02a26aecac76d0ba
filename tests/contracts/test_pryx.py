"""The Pryx front door: the status doc's 22 cases as they were meant (really stored), HEAD's two,
the runtime's log batches, the optional Bearer key and bad input on every route."""

import datetime as dt
import json

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from telemetry.ingest.auth import forget_projects
from telemetry.models import Batch, Event
from tests.concurrency import burst
from tests.factories import make_project

pytestmark = pytest.mark.django_db

WEEK = 604800


@pytest.fixture
def p():
    return make_project(contract="pryx")


def url(p, path):
    return f"/p/{p.project.slug}/api/{path}"


def post(client, p, path, body, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(url(p, path), data=data, content_type="application/json", **headers)


def query(client, p, token=None, **params):
    token = token or p.operator_token
    return client.get(url(p, "telemetry/query"), params, HTTP_AUTHORIZATION=f"Bearer {token}")


def event(n=1, **overrides):
    body = {
        "correlation_id": f"corr-{n:04d}-abcdef",
        "timestamp": int(timezone.now().timestamp() * 1000),
        "level": "info",
        "category": "provider",
        "model_id": "gpt-x",
        "duration_ms": 120,
        "device_id": "pryx-1767225600000000000",
        "session_id": "sess-1",
        "version": "0.9.1",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def now_ms():
    return int(timezone.now().timestamp() * 1000)


def assert_error(r, status, message):
    assert r.status_code == status
    assert r.content == json.dumps({"error": message}, separators=(",", ":")).encode()
    assert r["Cache-Control"] == "no-store"


# --- ingest ------------------------------------------------------------------------------------


def test_ingest_stores_a_single_event(client, p):
    before = now_ms()
    r = post(client, p, "telemetry/ingest", [event()])
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"accepted", "total", "retention_seconds", "timestamp", "results"}
    assert (body["accepted"], body["total"], body["retention_seconds"]) == (1, 1, WEEK)
    assert before <= body["timestamp"] <= now_ms()
    assert body["results"] == [{"index": 0, "success": True, "key": "corr-0001-abcdef"}]
    e = Event.objects.get()
    assert (e.event_id, e.name, e.install_id, e.session_id, e.app_version) == (
        "corr-0001-abcdef",
        "provider",
        "pryx-1767225600000000000",
        "sess-1",
        "0.9.1",
    )


def test_ingest_stores_multiple_events_in_one_request(client, p):
    r = post(client, p, "telemetry/ingest", [event(1), event(2), event(3)])
    assert r.json()["accepted"] == 3 and r.json()["total"] == 3
    assert Event.objects.count() == 3


def test_ingest_accepts_a_single_event_as_an_object(client, p):
    r = post(client, p, "telemetry/ingest", event())
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert Event.objects.count() == 1


def test_ingest_rejects_an_empty_array(client, p):
    assert_error(post(client, p, "telemetry/ingest", []), 400, "No events provided")
    assert Event.objects.count() == 0


@pytest.mark.parametrize("body", ["{oops", "", "[1,", b"\xff"])
def test_ingest_rejects_invalid_json(client, p, body):
    assert_error(post(client, p, "telemetry/ingest", body), 400, "Invalid JSON")
    assert Event.objects.count() == 0


def test_ingest_stores_events_with_received_at(client, p):
    before = now_ms()
    post(client, p, "telemetry/ingest", event())
    (stored,) = query(client, p).json()["events"]
    assert before <= stored["received_at"] <= now_ms()


def test_ingest_handles_a_large_batch_of_events(client, p):
    events = [event(i) for i in range(300)]
    r = post(client, p, "telemetry/ingest", events)
    body = r.json()
    assert (body["accepted"], body["total"]) == (300, 300)
    assert "results" not in body  # only for 25 events or fewer
    assert Event.objects.count() == 300


def test_ingest_without_correlation_id_is_stored_with_a_fresh_key(client, p):
    r = post(client, p, "telemetry/ingest", [event(correlation_id=None)] * 2)
    keys = [x["key"] for x in r.json()["results"]]
    assert r.json()["accepted"] == 2 and keys[0] != keys[1]
    assert Event.objects.count() == 2


def test_ingest_rejects_a_single_object_that_fails_validation(client, p):
    r = post(client, p, "telemetry/ingest", event(level={"nested": True}))
    assert_error(r, 400, "Invalid event: level: must be a string, number, boolean or null")
    assert Event.objects.count() == 0


@pytest.mark.parametrize("body", ["42", '"text"', "null", "true"])
def test_ingest_rejects_a_body_that_is_neither_object_nor_array(client, p, body):
    assert_error(
        post(client, p, "telemetry/ingest", body),
        400,
        "Invalid event: event: must be a JSON object",
    )
    assert Event.objects.count() == 0


# --- batch -------------------------------------------------------------------------------------


def test_batch_is_processed_and_completed(client, p):
    before = now_ms()
    r = post(client, p, "telemetry/batch", {"batch_id": "b-0001", "events": [event(1), event(2)]})
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "batch_id": "b-0001",
        "accepted": 2,
        "timestamp": body["timestamp"],
        "status": "completed",
    }
    assert before <= body["timestamp"] <= now_ms()
    assert Event.objects.count() == 2


def test_batch_id_is_generated_when_absent(client, p):
    body = post(client, p, "telemetry/batch", {"events": [event()]}).json()
    assert len(body["batch_id"]) == 16
    assert Batch.objects.get().batch_id == body["batch_id"]


def test_batch_over_1000_events_is_rejected(client, p):
    events = [event(i) for i in range(1001)]
    r = post(client, p, "telemetry/batch", {"events": events})
    assert_error(r, 400, "Batch too large: maximum 1000 events per batch")
    assert Event.objects.count() == 0 and Batch.objects.count() == 0


@pytest.mark.parametrize(
    "body", [{"events": []}, {}, {"events": "x"}, {"events": {"a": 1}}, [event()], "[]"]
)
def test_empty_or_malformed_batch_is_rejected(client, p, body):
    r = post(client, p, "telemetry/batch", body)
    assert_error(r, 400, "Invalid batch: events must be a non-empty array")
    assert Event.objects.count() == 0 and Batch.objects.count() == 0


@pytest.mark.parametrize("batch_id", ["", "has space", "x" * 65, 42])
def test_batch_with_an_invalid_batch_id_is_rejected(client, p, batch_id):
    r = post(client, p, "telemetry/batch", {"batch_id": batch_id, "events": [event()]})
    message = "Invalid batch: batch_id must be 1-64 characters of A-Z a-z 0-9 _ . : -"
    assert_error(r, 400, message)
    assert Event.objects.count() == 0 and Batch.objects.count() == 0


def test_batch_metadata_is_stored(client, p):
    post(client, p, "telemetry/batch", {"batch_id": "b-meta", "events": [event(1), event(2), 7]})
    batch = Batch.objects.get()
    assert (batch.batch_id, batch.event_count, batch.accepted, batch.status) == (
        "b-meta",
        3,
        2,
        "completed",
    )


def test_batch_events_are_associated_with_the_batch_id(client, p):
    post(client, p, "telemetry/batch", {"batch_id": "b-assoc", "events": [event(1), event(2)]})
    assert {e.properties["batch_id"] for e in Event.objects.all()} == {"b-assoc"}
    events = query(client, p).json()["events"]
    assert [e["batch_id"] for e in events] == ["b-assoc", "b-assoc"]


def test_batch_reports_bad_items_by_index_and_stores_the_rest(client, p):
    r = post(client, p, "telemetry/batch", {"batch_id": "b-mixed", "events": [event(1), "x"]})
    assert r.json()["rejected"] == [{"index": 1, "error": "event: must be a JSON object"}]
    assert r.json()["accepted"] == 1
    assert Event.objects.count() == 1


# --- batch status -----------------------------------------------------------------------------


def test_batch_status_is_retrieved(client, p):
    posted = post(client, p, "telemetry/batch", {"batch_id": "b-stat", "events": [event()]}).json()
    r = client.get(url(p, "telemetry/batch/b-stat"))
    assert r.status_code == 200
    assert (
        r.content
        == json.dumps(
            {
                "batch_id": "b-stat",
                "event_count": 1,
                "timestamp": posted["timestamp"],
                "status": "completed",
            },
            separators=(",", ":"),
        ).encode()
    )


def test_batch_status_is_404_for_an_unknown_batch(client, p):
    assert_error(client.get(url(p, "telemetry/batch/nope")), 404, "Batch not found")


def test_batch_status_is_per_project(client, p):
    other = make_project(contract="pryx")
    post(client, other, "telemetry/batch", {"batch_id": "b-theirs", "events": [event()]})
    assert_error(client.get(url(p, "telemetry/batch/b-theirs")), 404, "Batch not found")


# --- query -------------------------------------------------------------------------------------


def test_query_lists_telemetry_events_newest_first(client, p):
    post(client, p, "telemetry/ingest", event(1))
    post(client, p, "telemetry/ingest", event(2))
    r = query(client, p)
    body = r.json()
    assert (body["count"], body["limit"], body["retention_seconds"]) == (2, 100, WEEK)
    assert [e["correlation_id"] for e in body["events"]] == ["corr-0002-abcdef", "corr-0001-abcdef"]


@pytest.mark.parametrize(
    ("limit", "expected", "echo"), [("2", 2, 2), ("0", 1, 1), ("5000", 5, 1000)]
)
def test_query_respects_the_limit(client, p, limit, expected, echo):
    post(client, p, "telemetry/ingest", [event(i) for i in range(5)])
    body = query(client, p, limit=limit).json()
    assert (body["count"], body["limit"], len(body["events"])) == (expected, echo, expected)


def _age(correlation_id, hours):
    received = timezone.now() - dt.timedelta(hours=hours)
    Event.objects.filter(event_id=correlation_id).update(received_at=received)
    return int(received.timestamp() * 1000)


def test_query_filters_by_time_range(client, p):
    post(client, p, "telemetry/ingest", [event(1), event(2), event(3)])
    old = _age("corr-0001-abcdef", 48)
    mid = _age("corr-0002-abcdef", 24)
    body = query(client, p, start=mid - 1000, end=mid + 1000).json()
    assert [e["correlation_id"] for e in body["events"]] == ["corr-0002-abcdef"]
    body = query(client, p, end=mid + 1000).json()
    assert [e["correlation_id"] for e in body["events"]] == ["corr-0002-abcdef", "corr-0001-abcdef"]
    assert old < mid


def test_query_returns_limit_matches_even_behind_newer_non_matches(client, p):
    post(client, p, "telemetry/ingest", [event(i, level="error") for i in range(5)])
    for i in range(5):
        _age(f"corr-{i:04d}-abcdef", 10)
    post(client, p, "telemetry/ingest", [event(100 + i) for i in range(30)])
    body = query(client, p, level="error", limit=5).json()
    assert body["count"] == 5
    assert {e["level"] for e in body["events"]} == {"error"}


@pytest.mark.parametrize("param", ["start", "end", "limit"])
def test_query_rejects_a_non_integer_parameter(client, p, param):
    r = query(client, p, **{param: "soon"})
    assert_error(r, 400, f"Invalid query: {param} must be an integer")


def test_query_rejects_an_out_of_range_time(client, p):
    assert_error(query(client, p, start=10**20), 400, "Invalid query: start must be an integer")


def test_query_needs_the_operator_token(client, p):
    post(client, p, "telemetry/ingest", event())
    assert_error(client.get(url(p, "telemetry/query")), 401, "unauthorized")
    r = client.get(url(p, "telemetry/query"), HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}")
    assert_error(r, 403, "forbidden")


# --- edge cases -------------------------------------------------------------------------------


def test_malformed_event_data_is_handled_gracefully(client, p):
    items = [event(1), 42, event(2, level=["x"]), event(3, correlation_id=7), event(4)]
    r = post(client, p, "telemetry/ingest", items)
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["total"]) == (2, 5)
    assert body["rejected"] == [
        {"index": 1, "error": "event: must be a JSON object"},
        {"index": 2, "error": "level: must be a string, number, boolean or null"},
        {"index": 3, "error": "correlation_id: must be a string"},
    ]
    assert [x["success"] for x in body["results"]] == [True, False, False, False, True]
    assert Event.objects.count() == 2


def test_a_retried_request_is_stored_once(client, p):
    first = post(client, p, "telemetry/ingest", [event(1)]).json()
    again = post(client, p, "telemetry/ingest", [event(1)]).json()
    assert first["results"] == [{"index": 0, "success": True, "key": "corr-0001-abcdef"}]
    assert again["results"] == [
        {"index": 0, "success": True, "key": "corr-0001-abcdef", "duplicate": True}
    ]
    batch = {"batch_id": "b-retry", "events": [event(5, correlation_id=None)]}
    one = post(client, p, "telemetry/batch", batch).json()
    two = post(client, p, "telemetry/batch", batch).json()
    assert one == two
    assert Event.objects.count() == 2 and Batch.objects.count() == 1


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
)
def test_a_store_outage_is_503_and_leaves_no_batch_behind(client, p):
    r = post(client, p, "telemetry/batch", {"batch_id": "b-down", "events": [event()]})
    assert_error(r, 503, "telemetry_store_unavailable")
    assert int(r["Retry-After"]) > 0
    assert_error(post(client, p, "telemetry/ingest", event()), 503, "telemetry_store_unavailable")
    assert Event.objects.count() == 0 and Batch.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_accept_exactly_the_device_limit():
    p = make_project(contract="pryx", install_rate="10/h", ip_rate="1000/h")
    responses = burst(50, lambda i: post(Client(), p, "telemetry/ingest", event(i)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 40
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.content == b'{"error":"slow_down"}'
    assert 1 <= int(limited["Retry-After"]) <= 3600
    assert Event.objects.count() == 10


# --- persistence ------------------------------------------------------------------------------


def test_events_persist_with_seven_day_retention(client, p):
    assert p.project.retention_days == 7
    assert post(client, p, "telemetry/ingest", event()).json()["retention_seconds"] == WEEK
    assert query(client, p).json()["retention_seconds"] == WEEK


def test_original_event_data_is_preserved(client, p):
    sent = event(
        error_code="E42",
        cost_usd=0.0031,
        token_count=812,
        tool_name="shell",
        status="ok",
        extra_context={"attempt": 2, "tags": ["a", "b"]},
        flag=None,
    )
    post(client, p, "telemetry/ingest", sent)
    (stored,) = query(client, p).json()["events"]
    assert {k: v for k, v in stored.items() if k not in ("received_at", "key")} == sent
    assert stored["key"] == "corr-0001-abcdef"


# --- HEAD's two tests -------------------------------------------------------------------------


def test_persists_sanitized_events_with_retention_ttl(client, p):
    p.project.redact_pii = True
    p.project.save()
    forget_projects()
    sent = event(
        error_message="mail ana@example.com, key sk-abcdef1234567890, card 4111 1111 1111 1111",
        tool_name="call +1 415 555 2671",
        session_id="ana@example.com",
    )
    r = post(client, p, "telemetry/ingest", sent)
    assert r.json()["retention_seconds"] == WEEK
    e = Event.objects.get()
    assert e.properties["error_message"] == "mail [REDACTED], key [REDACTED], card [REDACTED]"
    assert e.properties["tool_name"] == "call [REDACTED]"
    assert e.session_id == "[REDACTED]"
    assert "ana@example.com" not in json.dumps(list(Event.objects.values()), default=str)


def test_returns_filtered_persisted_events_from_query_endpoint(client, p):
    post(
        client,
        p,
        "telemetry/ingest",
        [
            event(
                1, level="error", category="provider", device_id="pryx-111111111", session_id="s1"
            ),
            event(2, level="error", category="tool", device_id="pryx-111111111", session_id="s1"),
            event(
                3, level="info", category="provider", device_id="pryx-222222222", session_id="s2"
            ),
        ],
    )

    def ids(**filters):
        return [e["correlation_id"][5:9] for e in query(client, p, **filters).json()["events"]]

    assert ids(level="error") == ["0002", "0001"]
    assert ids(category="provider") == ["0003", "0001"]
    assert ids(device_id="pryx-222222222") == ["0003"]
    assert ids(session_id="s1", category="tool") == ["0002"]
    assert ids(level="debug") == []


# --- the runtime's log batches ----------------------------------------------------------------


def test_runtime_log_batches_are_stored_as_log_events_with_their_level(client, p):
    stamp = (timezone.now() - dt.timedelta(minutes=5)).replace(microsecond=0)
    body = {
        "service": "pryx-runtime",
        "logs": [
            {
                "timestamp": stamp.isoformat().replace("+00:00", "Z"),
                "level": "error",
                "message": "provider timeout",
                "fields": {"provider": "x", "attempt": 3},
            },
            {"timestamp": stamp.isoformat(), "level": "info", "message": "ready", "fields": {}},
        ],
    }
    r = post(client, p, "v1/logs", body)
    assert r.status_code == 200 and r.json()["accepted"] == 2
    assert set(Event.objects.values_list("name", flat=True)) == {"log"}
    e = Event.objects.get(properties__level="error")
    assert e.timestamp == stamp
    assert e.properties == {
        "service": "pryx-runtime",
        "timestamp": body["logs"][0]["timestamp"],
        "level": "error",
        "message": "provider timeout",
        "fields": {"provider": "x", "attempt": 3},
    }
    assert [x["message"] for x in query(client, p, level="error").json()["events"]] == [
        "provider timeout"
    ]


@pytest.mark.parametrize("body", [{"service": "pryx-runtime"}, {"logs": "x"}, [], "[]"])
def test_log_batches_without_a_logs_array_are_rejected(client, p, body):
    assert_error(post(client, p, "v1/logs", body), 400, "Invalid logs: logs must be an array")
    assert Event.objects.count() == 0


def test_log_batches_over_1000_entries_are_rejected(client, p):
    body = {"service": "s", "logs": [{"level": "info", "message": "m"}] * 1001}
    r = post(client, p, "v1/logs", body)
    assert_error(r, 400, "Too many logs: maximum 1000 entries per request")
    assert Event.objects.count() == 0


# --- the optional Bearer key ------------------------------------------------------------------


def test_anonymous_ingest_is_accepted_on_a_project_that_is_not_strict(client, p):
    assert post(client, p, "telemetry/ingest", event()).status_code == 200


def test_a_valid_ingest_key_is_accepted(client, p):
    r = post(client, p, "telemetry/ingest", event(), HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}")
    assert r.status_code == 200 and Event.objects.count() == 1


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "Basic abc", "token"])
def test_a_malformed_or_empty_authorization_is_401(client, p, header):
    r = post(client, p, "telemetry/ingest", event(), HTTP_AUTHORIZATION=header)
    assert_error(r, 401, "unauthorized")
    assert Event.objects.count() == 0


def test_a_wrong_or_foreign_key_is_403_on_every_write_route(client, p):
    other = make_project(contract="pryx")
    for key in ("tk_not-a-key", other.ingest_key, p.operator_token):
        for path, body in (
            ("telemetry/ingest", event()),
            ("telemetry/batch", {"events": [event()]}),
            ("v1/logs", {"service": "s", "logs": [{"level": "info", "message": "m"}]}),
        ):
            r = post(client, p, path, body, HTTP_AUTHORIZATION=f"Bearer {key}")
            assert_error(r, 403, "forbidden")
    assert Event.objects.count() == 0 and Batch.objects.count() == 0


def test_a_strict_project_requires_the_key(client, p):
    p.project.strict = True
    p.project.property_schema = {k: {} for k in event()}
    p.project.save()
    forget_projects()
    assert_error(post(client, p, "telemetry/ingest", event()), 401, "unauthorized")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {p.ingest_key}"}
    assert post(client, p, "telemetry/ingest", event(), **auth).json()["accepted"] == 1
    r = post(client, p, "telemetry/ingest", [event(2, surprise=1)], **auth)
    assert r.json()["rejected"] == [
        {"index": 0, "error": "properties.surprise: not in the project's schema"}
    ]
    assert Event.objects.count() == 1


# --- routing and limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "telemetry/ingest"),
        ("put", "telemetry/batch"),
        ("post", "telemetry/query"),
        ("get", "telemetry/batch/"),
        ("get", "telemetry/batch/a/b"),
        ("post", "v1/traces"),
        ("get", "nothing"),
    ],
)
def test_unknown_routes_and_methods_are_hono_404s(client, p, method, path):
    r = getattr(client, method)(url(p, path))
    assert r.status_code == 404
    assert r.content == b"404 Not Found"
    assert r["Content-Type"].startswith("text/plain")


def test_preflight_is_open_to_every_origin(client, p):
    r = client.options(
        url(p, "telemetry/ingest"),
        HTTP_ORIGIN="https://pryx.dev",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type",
    )
    assert r.status_code == 204
    assert r["Access-Control-Allow-Origin"] == "*"
    assert r["Access-Control-Allow-Headers"] == "authorization,content-type"


def test_a_body_over_5_mb_is_413(client, p):
    big = json.dumps([event(error_message="x" * 900)] * 6000)
    assert len(big) > 5 * 1024 * 1024
    assert_error(post(client, p, "telemetry/ingest", big), 413, "Payload too large")
    assert Event.objects.count() == 0


def test_no_raw_ip_is_stored(client, p):
    post(client, p, "telemetry/ingest", event(), REMOTE_ADDR="198.51.100.23")
    assert "198.51.100.23" not in json.dumps(list(Event.objects.values()), default=str)
    assert Event.objects.get().ip_hash


def test_text_no_database_can_store_is_rejected_by_index(client, p):
    items = [event(1, error_message="a\u0000b"), event(2, tool_name="\udc00"), event(3)]
    r = post(client, p, "telemetry/ingest", items)
    error = "event: text with NUL or a lone surrogate cannot be stored"
    assert r.json()["rejected"] == [{"index": 0, "error": error}, {"index": 1, "error": error}]
    assert Event.objects.count() == 1
    assert_error(post(client, p, "telemetry/ingest", "[" * 200_000), 400, "Invalid JSON")


def test_nul_in_a_query_filter_or_batch_id_is_a_clean_answer(client, p):
    assert_error(
        query(client, p, level="a\u0000"), 400, "Invalid query: level must be text without NUL"
    )
    assert_error(client.get(url(p, "telemetry/batch/a%00b")), 404, "Batch not found")


def test_a_trailing_newline_fits_no_id_rule(client, p):
    post(client, p, "telemetry/ingest", event(device_id="pryx-12345678\n"))
    install = Event.objects.get().install_id
    assert len(install) == 32 and "\n" not in install
    r = post(client, p, "telemetry/batch", {"batch_id": "b-1\n", "events": [event(2)]})
    assert r.status_code == 400 and Batch.objects.count() == 0
