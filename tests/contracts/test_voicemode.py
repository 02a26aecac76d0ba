"""The VoiceMode front door: the worker's own curl cases, its 13 messages, and our differences."""

import datetime as dt
import hashlib
import io
import json
import uuid

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from telemetry.contracts import voicemode
from telemetry.models import DailyActivity, Event, Install
from telemetry.services.projects import create_project
from tests.concurrency import burst
from tests.factories import fold, make_project

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}
IP = "203.0.113.77"


def report(**overrides) -> dict:
    """A payload shaped exactly like TelemetryCollector + TelemetryClient.send_event build it."""
    now = timezone.now()
    telemetry_id = str(uuid.uuid4())
    timestamp = now.isoformat()  # microseconds and +00:00, as Python writes it
    payload = {
        "telemetry_id": telemetry_id,
        "timestamp": timestamp,
        "period_start": (now - dt.timedelta(days=1)).isoformat(),
        "period_end": timestamp,
        "environment": {
            "os": "Linux",
            "install_method": "uv",
            "mcp_host": None,
            "exec_source": "mcp",
            "version": "7.0.1",
        },
        "usage": {
            "total_sessions": 3,
            "total_exchanges": 12,
            "duration_distribution": {"<1min": 1, "1-5min": 2},
            "exchanges_per_session": {"1-5": 3},
            "transport_usage": {"local": 3},
            "provider_usage": {"tts": {"kokoro": 6}, "stt": {"whisper-local": 6}},
        },
        "event_id": hashlib.sha256(f"{telemetry_id}:{timestamp}".encode()).hexdigest()[:16],
    }
    payload.update(overrides)
    return payload


def url(p, path="telemetry") -> str:
    return f"/p/{p.project.slug}/{path}"


def post(client, p, body, path="telemetry", content_type="application/json", **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    extra.setdefault("REMOTE_ADDR", IP)
    return client.post(url(p, path), data=data, content_type=content_type, **extra)


def assert_json(response, status, body):
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.content == json.dumps(body, separators=(",", ":")).encode()
    for name, value in CORS.items():
        assert response[name] == value


def assert_not_found(response):
    assert response.status_code == 404
    assert response.content == b"Not Found"
    assert response["Content-Type"].startswith("text/plain")
    for name, value in CORS.items():
        assert response[name] == value


def vm_project(**kwargs):
    return make_project(contract="voicemode", **kwargs)


# --- The worker's own test-endpoint.sh cases -------------------------------------------------


@pytest.mark.django_db
def test_it_accepts_a_valid_report_and_stores_it_under_the_client_names(client):
    p = vm_project()
    body = report()
    r = post(client, p, body)
    assert_json(r, 200, {"status": "ok", "event_id": body["event_id"]})
    event = Event.objects.get()
    assert event.project_id == p.project.pk
    assert event.event_id == body["event_id"]
    assert event.install_id == body["telemetry_id"]
    assert event.name == "telemetry"
    assert event.timestamp == dt.datetime.fromisoformat(body["timestamp"])
    assert event.app_version == "7.0.1" and event.os == "Linux"
    assert event.properties == {
        "period_start": body["period_start"],
        "period_end": body["period_end"],
        "environment": body["environment"],
        "usage": body["usage"],
    }
    fold()
    assert Install.objects.get().install_id == body["telemetry_id"]
    assert DailyActivity.objects.get().events == 1


@pytest.mark.django_db
def test_a_repeated_event_id_is_answered_already_recorded_and_stored_once(client):
    p = vm_project()
    body = report()
    post(client, p, body)
    r = post(client, p, body)
    assert_json(r, 200, {"status": "ok", "message": "Event already recorded"})
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_it_rejects_a_missing_telemetry_id(client):
    p = vm_project()
    body = report()
    del body["telemetry_id"]
    assert_json(post(client, p, body), 400, {"error": "Invalid or missing telemetry_id"})
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_it_rejects_a_telemetry_id_that_is_not_a_uuid(client):
    p = vm_project()
    r = post(client, p, report(telemetry_id="not-a-uuid"))
    assert_json(r, 400, {"error": "Invalid telemetry_id format (must be UUID)"})
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_the_eleventh_report_for_one_telemetry_id_within_the_hour_is_429(client):
    # The contract's own defaults: 10/h per telemetry_id, 100/h per IP.
    p = create_project(slug="vm-defaults", contract="voicemode")
    telemetry_id = str(uuid.uuid4())
    for i in range(10):
        r = post(client, p, report(telemetry_id=telemetry_id, event_id=f"evt{i}"))
        assert r.status_code == 200, r.content
    r = post(client, p, report(telemetry_id=telemetry_id, event_id="evt10"))
    retry = int(r["Retry-After"])
    assert 1 <= retry <= 3600
    assert_json(r, 429, {"error": "Rate limit exceeded for telemetry ID", "retry_after": retry})
    assert Event.objects.count() == 10


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["telemetry", "", "anything/else", "telemetry/"])
def test_a_cors_preflight_on_any_path_is_204(client, path):
    p = vm_project()
    r = client.options(url(p, path))
    assert r.status_code == 204
    assert r.content == b""
    for name, value in CORS.items():
        assert r[name] == value


# --- The 13 validation messages, in the worker's order ---------------------------------------


def _drop(*keys):
    def mutate(body):
        for key in keys:
            del body[key]
        return body

    return mutate


def _set(key, value):
    def mutate(body):
        body[key] = value
        return body

    return mutate


def _env(**changes):
    def mutate(body):
        for key, value in changes.items():
            if value is _MISSING:
                del body["environment"][key]
            else:
                body["environment"][key] = value
        return body

    return mutate


_MISSING = object()
_NOW = dt.datetime.now(dt.UTC)

INVALID = [
    ("null body", lambda b: None, "Missing payload"),
    ("false body", lambda b: False, "Missing payload"),
    ("empty object", lambda b: {}, "Invalid or missing event_id"),
    ("array body", lambda b: [b], "Invalid or missing event_id"),
    ("no event_id", _drop("event_id"), "Invalid or missing event_id"),
    ("empty event_id", _set("event_id", ""), "Invalid or missing event_id"),
    ("numeric event_id", _set("event_id", 12345678), "Invalid or missing event_id"),
    ("65-char event_id", _set("event_id", "e" * 65), "Invalid or missing event_id"),
    ("no telemetry_id", _drop("telemetry_id"), "Invalid or missing telemetry_id"),
    ("numeric telemetry_id", _set("telemetry_id", 7), "Invalid or missing telemetry_id"),
    (
        "uuid without dashes",
        _set("telemetry_id", uuid.uuid4().hex),
        "Invalid telemetry_id format (must be UUID)",
    ),
    (
        "uuid and newline",
        _set("telemetry_id", f"{uuid.uuid4()}\n"),
        "Invalid telemetry_id format (must be UUID)",
    ),
    ("no timestamp", _drop("timestamp"), "Invalid or missing timestamp"),
    ("numeric timestamp", _set("timestamp", 1734172200), "Invalid or missing timestamp"),
    (
        "prose timestamp",
        _set("timestamp", "yesterday"),
        "Invalid timestamp format (must be ISO 8601)",
    ),
    (
        "impossible date",
        _set("timestamp", "2025-02-30T10:00:00Z"),
        "Invalid timestamp format (must be ISO 8601)",
    ),
    (
        "two days ahead",
        _set("timestamp", (_NOW + dt.timedelta(days=2)).isoformat()),
        "Timestamp too far in the future",
    ),
    (
        "91 days old",
        _set("timestamp", (_NOW - dt.timedelta(days=91)).isoformat()),
        "Timestamp too old (max 90 days)",
    ),
    ("no environment", _drop("environment"), "Invalid or missing environment object"),
    ("string environment", _set("environment", "linux"), "Invalid or missing environment object"),
    ("array environment", _set("environment", []), "Invalid or missing environment.os"),
    ("no os", _env(os=_MISSING), "Invalid or missing environment.os"),
    ("empty os", _env(os=""), "Invalid or missing environment.os"),
    ("numeric os", _env(os=1), "Invalid or missing environment.os"),
    ("65-char os", _env(os="L" * 65), "Invalid or missing environment.os"),
    ("no version", _env(version=_MISSING), "Invalid or missing environment.version"),
    ("null version", _env(version=None), "Invalid or missing environment.version"),
    ("no usage", _drop("usage"), "Invalid or missing usage object"),
    ("numeric usage", _set("usage", 3), "Invalid or missing usage object"),
    ("usage without total", _set("usage", {"x": 1}), "Invalid or missing usage.total_sessions"),
    (
        "string total",
        _set("usage", {"total_sessions": "3"}),
        "Invalid or missing usage.total_sessions",
    ),
    (
        "boolean total",
        _set("usage", {"total_sessions": True}),
        "Invalid or missing usage.total_sessions",
    ),
    ("array usage", _set("usage", []), "Invalid or missing usage.total_sessions"),
    # Several faults at once: the first in the worker's order is the one reported.
    (
        "everything missing but event_id",
        lambda b: {"event_id": "x"},
        "Invalid or missing telemetry_id",
    ),
    (
        "bad os and bad usage",
        lambda b: {**b, "environment": {"version": "1"}, "usage": None},
        "Invalid or missing environment.os",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mutate", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_it_rejects_each_invalid_field_with_the_workers_message(client, mutate, message):
    p = vm_project()
    r = post(client, p, json.dumps(mutate(report())))
    assert_json(r, 400, {"error": message})
    assert Event.objects.count() == 0
    fold()
    assert Install.objects.count() == 0


def test_the_message_table_lists_the_thirteen_messages_in_check_order():
    names = [
        "MISSING_PAYLOAD",
        "BAD_EVENT_ID",
        "BAD_TELEMETRY_ID",
        "TELEMETRY_ID_NOT_UUID",
        "BAD_TIMESTAMP",
        "TIMESTAMP_NOT_ISO",
        "TIMESTAMP_FUTURE",
        "TIMESTAMP_OLD",
        "BAD_ENVIRONMENT",
        "BAD_OS",
        "BAD_VERSION",
        "BAD_USAGE",
        "BAD_TOTAL_SESSIONS",
    ]
    assert [getattr(voicemode, n) for n in names] == [
        "Missing payload",
        "Invalid or missing event_id",
        "Invalid or missing telemetry_id",
        "Invalid telemetry_id format (must be UUID)",
        "Invalid or missing timestamp",
        "Invalid timestamp format (must be ISO 8601)",
        "Timestamp too far in the future",
        "Timestamp too old (max 90 days)",
        "Invalid or missing environment object",
        "Invalid or missing environment.os",
        "Invalid or missing environment.version",
        "Invalid or missing usage object",
        "Invalid or missing usage.total_sessions",
    ]


# --- Deliberate differences from the worker (CONTRACTS A3) -----------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        "{",
        "",
        "not json",
        '{"a": NaN}',
        # A report whose number no float holds (read as infinity, PostgreSQL refused it: 503).
        json.dumps(report(usage={"total_sessions": 7})).replace(
            '"total_sessions": 7', '"total_sessions": 1e400'
        ),
        b"\xff\xfe",
        "[" * 20000 + "]" * 20000,
    ],
)
def test_invalid_json_is_a_400_not_the_workers_500(client, body):
    p = vm_project()
    assert_json(post(client, p, body), 400, {"error": "Invalid JSON"})
    assert Event.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "poison",
    [
        {"usage": {"total_sessions": 1, "note": "a\u0000b"}},
        {"environment": {"os": "Linux", "version": "1", "host": "\ud800"}},
        {"extra": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": [[[[[[[[[1]]]]]]]]]}}}}}}}}},
    ],
    ids=["nul", "lone surrogate", "deep nesting"],
)
def test_text_no_database_can_store_is_refused_as_invalid_json(client, poison):
    p = vm_project()
    assert_json(post(client, p, report(**poison)), 400, {"error": "Invalid JSON"})
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_a_fresh_install_with_empty_usage_is_accepted(client):
    p = vm_project()
    body = report(usage={})
    assert_json(post(client, p, body), 200, {"status": "ok", "event_id": body["event_id"]})
    assert Event.objects.get().properties["usage"] == {}


@pytest.mark.django_db
def test_the_real_clients_extra_keys_are_accepted_and_kept(client):
    p = vm_project()
    body = report(future_field={"kept": True})
    assert post(client, p, body).status_code == 200
    props = Event.objects.get().properties
    assert props["environment"]["mcp_host"] is None
    assert props["environment"]["install_method"] == "uv"
    assert props["environment"]["exec_source"] == "mcp"
    assert props["period_start"] == body["period_start"]
    assert props["future_field"] == {"kept": True}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "event_id", ["a", "0123456789abcdef", "x" * 64, "test123", "id with spaces/and:colons"]
)
def test_any_non_empty_event_id_up_to_64_characters_is_accepted(client, event_id):
    p = vm_project()
    assert_json(
        post(client, p, report(event_id=event_id)),
        200,
        {
            "status": "ok",
            "event_id": event_id,
        },
    )
    assert Event.objects.get().event_id == event_id


@pytest.mark.django_db
@pytest.mark.parametrize("timestamp", ["2024-12-14T10:30:00Z", "2024-12-14T10:30:00"])
def test_a_timestamp_without_offset_or_with_z_is_read_as_utc(client, timestamp):
    p = vm_project()
    moment = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
    stamp = timestamp.replace("2024-12-14T10:30:00", moment.strftime("%Y-%m-%dT%H:%M:%S"))
    assert post(client, p, report(timestamp=stamp)).status_code == 200
    assert Event.objects.get().timestamp == moment


@pytest.mark.django_db
def test_the_clients_three_retries_after_a_stored_report_are_all_200(client):
    p = vm_project()
    body = report()
    assert post(client, p, body).status_code == 200
    for _ in range(3):
        assert_json(
            post(client, p, body), 200, {"status": "ok", "message": "Event already recorded"}
        )
    assert Event.objects.count() == 1
    fold()
    assert Install.objects.get().event_count == 1


@pytest.mark.django_db
def test_the_same_event_id_under_another_telemetry_id_is_a_duplicate(client):
    p = vm_project()
    body = report()
    post(client, p, body)
    r = post(client, p, report(event_id=body["event_id"]))
    assert_json(r, 200, {"status": "ok", "message": "Event already recorded"})
    assert Event.objects.get().install_id == body["telemetry_id"]


@pytest.mark.django_db
def test_a_duplicate_uses_no_quota(client):
    p = vm_project(install_rate="1/h")
    first = report()
    assert post(client, p, first).status_code == 200
    for _ in range(5):
        assert post(client, p, first).status_code == 200
    r = post(client, p, report(telemetry_id=first["telemetry_id"]))
    assert r.status_code == 429
    assert r.json()["error"] == "Rate limit exceeded for telemetry ID"
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_the_ip_limit_answers_with_the_workers_ip_message(client):
    p = vm_project(install_rate="10/h", ip_rate="2/h")
    assert post(client, p, report()).status_code == 200
    assert post(client, p, report()).status_code == 200
    r = post(client, p, report())
    retry = int(r["Retry-After"])
    assert 1 <= retry <= 3600
    assert_json(r, 429, {"error": "Rate limit exceeded for IP address", "retry_after": retry})
    # Another address has its own counter.
    assert post(client, p, report(), REMOTE_ADDR="198.51.100.9").status_code == 200
    assert Event.objects.count() == 3


def test_a_voicemode_project_defaults_to_the_workers_limits(db):
    project = create_project(slug="vm-limits", contract="voicemode").project
    assert (project.install_rate, project.ip_rate) == ("10/h", "100/h")


@pytest.mark.django_db
def test_a_body_sent_without_a_json_content_type_is_read_like_the_worker_did(client):
    p = vm_project()
    assert (
        post(client, p, report(), content_type="application/x-www-form-urlencoded").status_code
        == 200
    )
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_a_url_ending_in_telemetry_below_another_folder_is_accepted(client):
    p = vm_project()
    assert post(client, p, report(), path="v1/telemetry").status_code == 200


# --- Routing and bad input -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_any_method_but_post_and_options_is_404_not_found(client, method):
    p = vm_project()
    r = getattr(client, method)(url(p))
    assert_not_found(r)


@pytest.mark.django_db
def test_head_is_404_with_cors(client):
    p = vm_project()
    r = client.head(url(p))
    assert r.status_code == 404
    assert r["Access-Control-Allow-Origin"] == "*"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["telemetry/", "telemetry?x=1", "telemetry?", "telemetryx", "", "v1/session"]
)
def test_a_post_anywhere_else_is_404_with_no_redirect(client, path):
    p = vm_project()
    r = client.post(url(p, path), data=json.dumps(report()), content_type="application/json")
    if path == "telemetry?":
        # An empty query string does not reach WSGI: the URL is /telemetry to us.
        assert r.status_code == 200
        return
    assert_not_found(r)
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_a_body_over_64_kib_is_413_by_declared_length(client):
    p = vm_project()
    body = report(padding="x" * (64 * 1024))
    assert_json(post(client, p, body), 413, {"error": "Payload too large"})
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_a_chunked_body_streamed_past_64_kib_is_413(client):
    p = vm_project()
    data = json.dumps(report(padding="x" * (64 * 1024))).encode()
    r = client.post(
        url(p),
        data=data,
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(data)},
    )
    assert_json(r, 413, {"error": "Payload too large"})
    assert Event.objects.count() == 0


@pytest.mark.django_db
@override_settings(
    CACHES={
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
)
def test_an_unreachable_cache_is_a_503_in_the_contracts_shape_and_stores_nothing(client, settings):
    p = vm_project()
    r = post(client, p, report())
    retry = settings.TELEMETRY_RETRY_AFTER_SECONDS
    assert r["Retry-After"] == str(retry)
    assert_json(r, 503, {"error": "Service unavailable", "retry_after": retry})
    assert Event.objects.count() == 0
    fold()
    assert Install.objects.count() == 0


@pytest.mark.django_db
def test_no_raw_ip_is_stored(client):
    p = vm_project()
    post(client, p, report())
    event = Event.objects.get()
    assert len(event.ip_hash) == 32 and IP not in event.ip_hash
    fold()
    rows = [
        *Event.objects.values(),
        *Install.objects.values(),
        *DailyActivity.objects.values(),
    ]
    assert IP not in json.dumps(rows, default=str)


@pytest.mark.django_db
@override_settings(ALLOWED_HOSTS=["telemetry.example.test", "testserver"])
def test_the_project_hostname_serves_the_worker_at_the_root_path(client):
    p = vm_project(hostnames=["telemetry.example.test"])
    body = report()
    r = client.post(
        "/telemetry",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_HOST="telemetry.example.test",
    )
    assert_json(r, 200, {"status": "ok", "event_id": body["event_id"]})
    assert Event.objects.get().project_id == p.project.pk
    assert client.options("/anything", HTTP_HOST="telemetry.example.test").status_code == 204
    assert_not_found(client.get("/telemetry", HTTP_HOST="telemetry.example.test"))


# --- Concurrency -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_reports_for_one_telemetry_id_accept_exactly_ten():
    p = vm_project(install_rate="10/h", ip_rate="1000/h")
    telemetry_id = str(uuid.uuid4())
    responses = burst(
        50,
        lambda i: post(Client(), p, report(telemetry_id=telemetry_id, event_id=f"burst-{i}")),
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 40
    limited = [r.json() for r in responses if r.status_code == 429]
    assert {b["error"] for b in limited} == {"Rate limit exceeded for telemetry ID"}
    assert Event.objects.count() == 10
    fold()
    assert Install.objects.get().event_count == 10


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_copies_of_one_report_are_stored_once():
    p = vm_project()
    body = report()
    responses = burst(50, lambda i: post(Client(), p, body).json())
    assert responses.count({"status": "ok", "event_id": body["event_id"]}) == 1
    assert responses.count({"status": "ok", "message": "Event already recorded"}) == 49
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_a_shorter_retention_narrows_the_window_so_nothing_accepted_is_purged_that_day(client):
    from telemetry.services.purge import purge_project

    p = make_project(contract="voicemode", retention_days=30)
    now = timezone.now()
    old = report(timestamp=(now - dt.timedelta(days=30, seconds=60)).isoformat())
    assert_json(post(client, p, old), 400, {"error": "Timestamp too old (max 90 days)"})
    inside = report(timestamp=(now - dt.timedelta(days=29, hours=23)).isoformat())
    assert post(client, p, inside).status_code == 200
    purge_project(project=p.project, now=now, pause=0)
    fold()
    assert Event.objects.count() == DailyActivity.objects.count() == Install.objects.count() == 1
