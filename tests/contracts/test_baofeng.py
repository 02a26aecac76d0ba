"""The Baofeng flasher front door: the log-intake worker's routes and the legacy counter."""

import datetime as dt
import json

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from telemetry.ingest.auth import forget_projects
from telemetry.models import Event, Install
from tests.concurrency import burst
from tests.factories import fold, forget_claims, make_project

pytestmark = pytest.mark.django_db

ORIGIN = "https://flasher.example.org"
JSON_TYPE = "application/json; charset=utf-8"


@pytest.fixture
def p():
    return make_project(contract="baofeng", allowed_origins=[ORIGIN])


def url(p, path):
    return f"/p/{p.project.slug}/{path}"


def post(client, p, path, body, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(url(p, path), data=data, content_type="text/plain", **headers)


def flash(session="sess-0001-abcd", **overrides):
    event = {
        "event_type": "flash_success",
        "occurred_at": timezone.now().isoformat(),
        "session_id": session,
        "message": "Flash complete",
        "model": "UV-5RM",
        "write_mode": 1,
        "connected": 1,
        "app_version": "abc1234",
        "log_lines_json": json.dumps(["connected", "wrote logo"]),
        "metadata_json": json.dumps({"source": "web-v2"}),
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def failure(**overrides):
    event = flash(session=None, event_type="flash_error", message="Timeout writing block 3")
    event.update(error_name="TimeoutError", stack="at write (serial.ts:10)")
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def assert_reply(r, status, body):
    assert r.status_code == status
    assert r.content == json.dumps(body, separators=(",", ":")).encode()
    assert r["Content-Type"] == JSON_TYPE
    assert r["Cache-Control"] == "no-store"


# --- POST /event ---------------------------------------------------------------------------


def test_event_stores_a_flash_success_under_the_clients_names(client, p):
    r = post(client, p, "event", flash())
    assert_reply(r, 200, {"ok": True, "deduped": False})
    e = Event.objects.get()
    assert (e.name, e.install_id, e.session_id, e.app_version, e.os) == (
        "flash_success",
        "sess-0001-abcd",
        "sess-0001-abcd",
        "abc1234",
        "",
    )
    assert e.properties["log_lines"] == ["connected", "wrote logo"]
    assert e.properties["metadata"] == {"source": "web-v2"}
    assert e.properties["write_mode"] == 1 and e.properties["model"] == "UV-5RM"
    fold()
    assert Install.objects.get().install_id == "sess-0001-abcd"


def test_repeated_flash_success_is_deduped_and_uses_no_quota(client):
    p = make_project(contract="baofeng", install_rate="100/h", ip_rate="2/h")
    assert_reply(post(client, p, "event", flash()), 200, {"ok": True, "deduped": False})
    for _ in range(3):
        assert_reply(post(client, p, "event", flash()), 200, {"ok": True, "deduped": True})
    assert post(client, p, "event", failure()).status_code == 200
    r = post(client, p, "event", failure())
    assert_reply(r, 429, {"ok": False, "error": "Rate limited"})
    assert Event.objects.count() == 2


def test_a_session_flashing_again_days_later_is_still_one_flash(client, p):
    """The worker's unique index was per session: the dedupe holds past the claim's TTL and
    across days, though the event's time (part of the stored key) differs."""
    first = timezone.now() - dt.timedelta(days=3)
    body = flash(occurred_at=first.isoformat())
    assert_reply(post(client, p, "event", body), 200, {"ok": True, "deduped": False})
    forget_claims()
    later = flash(occurred_at=timezone.now().isoformat())
    assert_reply(post(client, p, "event", later), 200, {"ok": True, "deduped": True})
    forget_claims()
    r = post(client, p, "increment", {"sessionId": "sess-0001-abcd"})
    assert r.json()["deduped"] is True
    assert Event.objects.count() == 1


def test_error_events_are_never_deduped(client, p):
    for _ in range(2):
        assert_reply(post(client, p, "event", failure()), 200, {"ok": True, "deduped": False})
    assert Event.objects.filter(name="flash_error").count() == 2


def test_client_error_is_an_accepted_event_type(client, p):
    r = post(client, p, "event", failure(event_type="client_error"))
    assert_reply(r, 200, {"ok": True, "deduped": False})
    assert Event.objects.get().name == "client_error"


@pytest.mark.parametrize(
    "change",
    [
        {"event_type": "flash_started"},
        {"event_type": ["flash_error"]},
        {"message": ""},
        {"message": "   "},
        {"message": 42},
        {"message": None},
        {"occurred_at": None},
        {"occurred_at": "yesterday-ish"},
        {"log_lines_json": "not json"},
        {"log_lines_json": '{"a": 1}'},
        {"log_lines_json": ["already", "a", "list"]},
        {"metadata_json": "[1, 2]"},
        {"metadata_json": "{broken"},
        {"metadata_json": {"source": "web-v2"}},
    ],
)
def test_event_rejects_invalid_fields(client, p, change):
    body = failure()
    for key, value in change.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    r = post(client, p, "event", body)
    assert_reply(r, 400, {"ok": False, "error": "Invalid payload fields"})
    assert Event.objects.count() == 0


def test_flash_success_needs_a_session_id(client, p):
    r = post(client, p, "event", flash(session=None))
    assert_reply(r, 400, {"ok": False, "error": "Invalid payload fields"})
    assert Event.objects.count() == 0


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "null", "42"])
def test_event_rejects_a_body_that_is_not_an_object(client, p, body):
    assert_reply(
        post(client, p, "event", body), 400, {"ok": False, "error": "Invalid payload fields"}
    )
    assert Event.objects.count() == 0


@pytest.mark.parametrize("body", ["{not json", "", "NaN", b"\xff\xfe{}"])
def test_event_rejects_invalid_json(client, p, body):
    assert_reply(post(client, p, "event", body), 400, {"ok": False, "error": "Invalid JSON"})
    assert Event.objects.count() == 0


def test_event_over_40000_characters_is_413(client, p):
    body = json.dumps(failure(stack="x" * 40_001))
    assert_reply(post(client, p, "event", body), 413, {"ok": False, "error": "Payload too large"})
    assert Event.objects.count() == 0


def test_the_cap_counts_characters_not_bytes(client, p):
    body = json.dumps(failure(stack="é" * 30_000), ensure_ascii=False)
    assert len(body) < 40_000 < len(body.encode())
    assert post(client, p, "event", body.encode()).status_code == 200
    assert Event.objects.count() == 1


def test_sanitising_cuts_long_fields_and_ends_them_in_dots(client, p):
    lines = [f"line {i} " + "y" * 300 for i in range(100)]
    body = failure(
        message="m" * 500,
        stack="s" * 2000,
        error_name="E" * 200,
        model=None,
        app_version="v" * 100,
        write_mode=2,
        connected="1",
        log_lines_json=json.dumps(lines),
    )
    assert post(client, p, "event", body).status_code == 200
    props = Event.objects.get().properties
    assert props["message"] == "m" * 297 + "..."
    assert props["stack"] == "s" * 1197 + "..."
    assert props["error_name"] == "E" * 117 + "..."
    assert props["model"] == "unknown"
    assert props["app_version"] == "v" * 61 + "..."
    assert props["write_mode"] == 0 and props["connected"] == 0
    assert len(props["log_lines"]) == 80
    assert props["log_lines"][0] == ("line 20 " + "y" * 300)[:237] + "..."
    assert props["log_lines"][-1].startswith("line 99 ")


def test_a_clock_far_off_is_filed_under_arrival_but_keeps_the_clients_string(client, p):
    sent = "2001-01-01T00:00:00Z"
    before = timezone.now()
    assert post(client, p, "event", failure(occurred_at=sent)).status_code == 200
    e = Event.objects.get()
    assert e.timestamp >= before
    assert e.properties["occurred_at"] == sent


def test_a_valid_occurred_at_becomes_the_event_time(client, p):
    moment = (timezone.now() - dt.timedelta(hours=3)).replace(microsecond=0)
    sent = moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert post(client, p, "event", failure(occurred_at=sent)).status_code == 200
    assert Event.objects.get().timestamp == moment


def test_a_session_id_outside_the_install_rule_is_hashed_stably(client, p):
    session = "session with spaces/" + "z" * 80
    assert post(client, p, "event", flash(session=session)).status_code == 200
    e = Event.objects.get()
    assert len(e.install_id) == 32 and all(c in "0123456789abcdef" for c in e.install_id)
    assert e.session_id == ""
    assert e.properties["session_id"] == session
    assert post(client, p, "event", failure(session_id=session)).status_code == 200
    assert Event.objects.filter(install_id=e.install_id).count() == 2


# --- POST /client-log ----------------------------------------------------------------------


def test_client_log_accepts_any_event_type_and_answers_ok(client, p):
    r = post(client, p, "client-log", failure(event_type="Window Error", message=""))
    assert_reply(r, 200, {"ok": True})
    e = Event.objects.get()
    assert e.name == "window_error"
    assert e.properties["event_type"] == "Window Error"


def test_client_log_names_an_unnameable_type_client_log(client, p):
    assert post(client, p, "client-log", failure(event_type="Über crash!")).status_code == 200
    assert Event.objects.get().name == "client_log"


def test_client_log_ignores_page_url_and_user_agent(client, p):
    body = failure(page_url="https://x.test/?email=a@b.c", user_agent="Mozilla")
    assert post(client, p, "client-log", body).status_code == 200
    assert "page_url" not in Event.objects.get().properties


@pytest.mark.parametrize(
    "change", [{"event_type": ""}, {"occurred_at": "soon"}, {"log_lines_json": "[oops"}]
)
def test_client_log_rejects_invalid_fields(client, p, change):
    r = post(client, p, "client-log", failure(**change))
    assert_reply(r, 400, {"ok": False, "error": "Invalid payload fields"})
    assert Event.objects.count() == 0


# --- counters --------------------------------------------------------------------------------


def test_flash_count_adds_the_largest_baseline_to_real_flashes(client, p):
    for session, total in (("baseline-2026-01", 1000), ("baseline-2026-02", 1200)):
        meta = json.dumps({"baseline_total": total})
        assert (
            post(client, p, "event", flash(session=session, metadata_json=meta)).status_code == 200
        )
    for session in ("sess-real-0001", "sess-real-0002", "sess-real-0002"):
        post(client, p, "event", flash(session=session))
    post(client, p, "event", failure())
    r = client.get(url(p, "metrics/flash-count"))
    assert_reply(r, 200, {"ok": True, "total": 1202})
    assert_reply(client.get(url(p, "count")), 200, {"total": 1202})


def test_flash_count_is_zero_for_a_new_project(client, p):
    assert_reply(client.get(url(p, "metrics/flash-count")), 200, {"ok": True, "total": 0})


def test_legacy_increment_and_event_count_one_flash_per_session(client, p):
    r = post(client, p, "increment", {"sessionId": "legacy-sess-01"})
    assert_reply(r, 200, {"total": 1, "deduped": False})
    r = post(client, p, "increment", {"sessionId": "legacy-sess-01"})
    assert_reply(r, 200, {"total": 1, "deduped": True})
    r = post(client, p, "event", flash(session="legacy-sess-01"))
    assert_reply(r, 200, {"ok": True, "deduped": True})
    post(client, p, "event", flash(session="new-client-01"))
    r = post(client, p, "increment", {"sessionId": "new-client-01"})
    assert_reply(r, 200, {"total": 2, "deduped": True})
    assert_reply(client.get(url(p, "count")), 200, {"total": 2})
    assert_reply(client.get(url(p, "metrics/flash-count")), 200, {"ok": True, "total": 2})
    assert Event.objects.filter(name="flash_success").count() == 2


@pytest.mark.parametrize(
    "body", ['{"sessionId": ""}', '{"session": "x"}', "[]", '{"sessionId": 7}']
)
def test_legacy_increment_rejects_a_missing_session(client, p, body):
    r = post(client, p, "increment", body)
    assert_reply(r, 400, {"ok": False, "error": "Invalid payload fields"})
    assert Event.objects.count() == 0


def test_legacy_increment_rejects_invalid_json(client, p):
    assert_reply(post(client, p, "increment", "{"), 400, {"ok": False, "error": "Invalid JSON"})


# --- CORS --------------------------------------------------------------------------------------


def test_an_allowed_origin_gets_the_workers_cors_headers(client, p):
    r = post(client, p, "event", failure(), HTTP_ORIGIN=ORIGIN)
    assert r.status_code == 200
    assert r["Access-Control-Allow-Origin"] == ORIGIN
    assert r["Vary"] == "Origin"
    assert r["Access-Control-Allow-Methods"] == "POST, GET, OPTIONS"
    assert r["Access-Control-Allow-Headers"] == "Content-Type, Authorization"
    assert r["Access-Control-Max-Age"] == "86400"


def test_another_origin_is_refused_and_nothing_is_stored(client, p):
    r = post(client, p, "event", failure(), HTTP_ORIGIN="https://evil.example")
    assert_reply(r, 403, {"ok": False, "error": "Origin not allowed"})
    assert "Access-Control-Allow-Origin" not in r
    assert Event.objects.count() == 0
    r = client.get(url(p, "metrics/flash-count"), HTTP_ORIGIN="https://evil.example")
    assert_reply(r, 403, {"ok": False, "error": "Origin not allowed"})


def test_requests_without_origin_are_allowed_without_cors_headers(client, p):
    r = post(client, p, "event", failure())
    assert r.status_code == 200
    assert "Access-Control-Allow-Origin" not in r


def test_preflight_from_an_allowed_origin_is_204(client, p):
    r = client.options(url(p, "event"), HTTP_ORIGIN=ORIGIN)
    assert r.status_code == 204
    assert r.content == b""
    assert r["Access-Control-Allow-Origin"] == ORIGIN
    assert r["Access-Control-Allow-Methods"] == "POST, GET, OPTIONS"


def test_preflight_without_origin_is_204(client, p):
    assert client.options(url(p, "anything")).status_code == 204


def test_preflight_from_another_origin_is_an_empty_403(client, p):
    r = client.options(url(p, "event"), HTTP_ORIGIN="https://evil.example")
    assert r.status_code == 403
    assert r.content == b""
    assert "Access-Control-Allow-Origin" not in r


# --- /recent ----------------------------------------------------------------------------------


def test_recent_needs_the_operator_token(client, p):
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "Basic x"}):
        r = client.get(url(p, "recent"), **headers)
        assert_reply(r, 401, {"ok": False, "error": "Unauthorized"})
    r = client.get(url(p, "recent"), HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}")
    assert r.status_code == 401


def test_recent_is_503_when_the_project_has_no_operator_token(client, p):
    p.project.operator_token_hash = ""
    p.project.save()
    forget_projects()
    r = client.get(url(p, "recent"), HTTP_AUTHORIZATION=f"Bearer {p.operator_token}")
    assert_reply(r, 503, {"ok": False, "error": "ADMIN_TOKEN is not configured"})


def test_recent_lists_failures_newest_first_in_camel_case(client, p):
    post(client, p, "event", flash())
    post(client, p, "client-log", failure(message="first", write_mode=1))
    post(client, p, "event", failure(message="second", connected=0))
    r = client.get(url(p, "recent"), HTTP_AUTHORIZATION=f"Bearer {p.operator_token}")
    assert r.status_code == 200 and r["Content-Type"] == JSON_TYPE
    body = r.json()
    assert body["ok"] is True and body["count"] == 2
    newest, older = body["rows"]
    assert (newest["message"], older["message"]) == ("second", "first")
    assert set(newest) == {
        "id",
        "receivedAtMs",
        "occurredAt",
        "eventType",
        "message",
        "errorName",
        "model",
        "writeMode",
        "connected",
        "appVersion",
        "pageUrl",
        "logLines",
    }
    assert older["writeMode"] is True and newest["connected"] is False
    assert newest["eventType"] == "flash_error" and newest["errorName"] == "TimeoutError"
    assert newest["logLines"] == ["connected", "wrote logo"] and newest["pageUrl"] is None
    assert isinstance(newest["receivedAtMs"], int)


@pytest.mark.parametrize(("limit", "expected"), [("0", 1), ("2", 2), ("abc", 3), ("999", 3)])
def test_recent_clamps_the_limit(client, p, limit, expected):
    for i in range(3):
        post(client, p, "event", failure(message=f"m{i}"))
    r = client.get(
        url(p, "recent"), {"limit": limit}, HTTP_AUTHORIZATION=f"Bearer {p.operator_token}"
    )
    assert r.json()["count"] == expected


# --- the rest of the routes -------------------------------------------------------------------


def test_health_answers_the_service_name(client, p):
    assert_reply(client.get(url(p, "health")), 200, {"ok": True, "service": "baofeng-log-intake"})


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "event"), ("post", "health"), ("get", "nope"), ("put", "event"), ("get", "")],
)
def test_unknown_routes_and_methods_are_404(client, p, method, path):
    r = getattr(client, method)(url(p, path))
    assert_reply(r, 404, {"ok": False, "error": "Not found"})
    assert Event.objects.count() == 0


def test_rate_limited_event_is_429_with_the_real_retry_after(client):
    p = make_project(contract="baofeng", install_rate="1/h")
    assert post(client, p, "event", failure(session_id="sess-rate-001")).status_code == 200
    r = post(client, p, "event", failure(session_id="sess-rate-001"))
    assert_reply(r, 429, {"ok": False, "error": "Rate limited"})
    assert 1 <= int(r["Retry-After"]) <= 3600
    assert Event.objects.count() == 1


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
    r = post(client, p, "event", failure())
    assert_reply(r, 503, {"ok": False, "error": "Service unavailable"})
    assert int(r["Retry-After"]) > 0
    assert Event.objects.count() == 0


def test_no_raw_ip_is_stored(client, p):
    post(client, p, "event", failure(), REMOTE_ADDR="203.0.113.77")
    e = Event.objects.get()
    assert e.ip_hash and "203.0.113.77" not in e.ip_hash
    row = json.dumps(Event.objects.values().get(), default=str)
    assert "203.0.113.77" not in row


@override_settings(ALLOWED_HOSTS=["flash-telemetry.example.test"])
def test_the_projects_hostname_serves_the_worker_at_the_root_path(client):
    p = make_project(contract="baofeng", hostnames=["flash-telemetry.example.test"])
    host = {"HTTP_HOST": "flash-telemetry.example.test"}
    assert_reply(client.get("/health", **host), 200, {"ok": True, "service": "baofeng-log-intake"})
    r = client.post("/event", json.dumps(flash()), content_type="application/json", **host)
    assert_reply(r, 200, {"ok": True, "deduped": False})
    assert Event.objects.get().project_id == p.project.pk


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_reports_from_one_ip_accept_exactly_the_ip_limit():
    p = make_project(contract="baofeng", install_rate="100/h", ip_rate="10/h")
    statuses = burst(50, lambda i: post(Client(), p, "event", failure()).status_code)
    assert statuses.count(200) == 10
    assert statuses.count(429) == 40
    assert Event.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_flashes_of_one_session_count_once():
    p = make_project(contract="baofeng")
    bodies = burst(50, lambda i: post(Client(), p, "event", flash(session="sess-burst-1")).json())
    assert bodies.count({"ok": True, "deduped": False}) == 1
    assert bodies.count({"ok": True, "deduped": True}) == 49
    assert Event.objects.count() == 1
    assert Client().get(url(p, "count")).json() == {"total": 1}


# --- text no database can hold ----------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"message": "a\u0000b"},
        {"stack": "lone \ud800 surrogate"},
        {"metadata_json": json.dumps({"k": "\u0000"})},
        {"metadata_json": "{" + '"a":{' * 20 + "}" * 21},
    ],
)
def test_text_no_database_can_store_is_invalid_not_a_server_error(client, p, change):
    r = post(client, p, "event", json.dumps(failure(**change)))
    assert_reply(r, 400, {"ok": False, "error": "Invalid payload fields"})
    assert Event.objects.count() == 0


def test_absurdly_nested_json_is_invalid_json(client, p):
    assert_reply(
        post(client, p, "event", "[" * 30_000), 400, {"ok": False, "error": "Invalid JSON"}
    )
    r = post(client, p, "increment", {"sessionId": "nul\u0000id"})
    assert_reply(r, 400, {"ok": False, "error": "Invalid payload fields"})


def test_the_flash_total_survives_the_retention_purge(client, p):
    from telemetry.services.purge import purge_project

    meta = json.dumps({"baseline_total": 1000})
    assert post(client, p, "event", flash(session="baseline-2026", metadata_json=meta)).status_code
    for session in ("sess-real-0001", "sess-real-0002"):
        post(client, p, "event", flash(session=session))
    post(client, p, "increment", {"sessionId": "legacy-sess-01"})
    post(client, p, "event", failure())
    assert_reply(client.get(url(p, "count")), 200, {"total": 1003})
    later = timezone.now() + dt.timedelta(days=p.project.retention_days + 2)
    purge_project(project=p.project, now=later, pause=0)
    assert Event.objects.count() == 0  # every row past retention is gone ...
    # ... and the lifetime counter is not: it never counted rows.
    assert_reply(client.get(url(p, "count")), 200, {"total": 1003})
    assert_reply(client.get(url(p, "metrics/flash-count")), 200, {"ok": True, "total": 1003})


def test_a_seeding_flash_is_not_listed_in_recent(client, p):
    meta = json.dumps({"baseline_total": 1000})
    post(client, p, "event", flash(session="baseline-2026", metadata_json=meta))
    post(client, p, "event", failure())
    r = client.get(url(p, "recent"), HTTP_AUTHORIZATION=f"Bearer {p.operator_token}")
    assert [row["eventType"] for row in r.json()["rows"]] == ["flash_error"]
