"""The Domscribe front door: the worker's own 26 tests, our token and limits, and bad input."""

import datetime as dt
import io
import json
import secrets

import pytest
from django.test import Client, override_settings

from telemetry.contracts import domscribe
from telemetry.models import DailyActivity, Event, Install, Project
from tests.concurrency import burst
from tests.factories import fold, forget_claims, make_project

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TEXT = "text/plain; charset=utf-8"
IP = "203.0.113.88"
MONDAY = dt.datetime(2026, 5, 25, 0, 0, tzinfo=dt.UTC)  # 2026-W22 starts


def session_payload(**overrides) -> dict:
    payload = {
        "protocol_version": "1.0.0",
        "daemon_version": "0.4.2",
        "session_id": secrets.token_urlsafe(16),
        "platform": "linux",
        "node_version": "v22.11.0",
        "primary_framework": "react",
    }
    payload.update(overrides)
    return payload


def post(client, p, body, content_type="application/json", path="v1/session", **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    extra.setdefault("REMOTE_ADDR", IP)
    return client.post(f"/p/{p.project.slug}/{path}", data=data, content_type=content_type, **extra)


def get(client, p, path, **extra):
    return client.get(f"/p/{p.project.slug}/{path}", **extra)


def assert_text(response, status, body):
    assert response.status_code == status
    assert response.content == body.encode()
    assert response["Content-Type"] == TEXT
    for name, value in SECURITY.items():
        assert response[name] == value


def dom_project(**kwargs):
    return make_project(contract="domscribe", **kwargs)


@pytest.fixture
def frozen(monkeypatch):
    """Pin the server clock the week key is computed from."""
    moment = {"now": MONDAY + dt.timedelta(hours=10)}
    monkeypatch.setattr(domscribe, "_now", lambda: moment["now"])
    return moment


# --- POST /v1/session: the worker's 12 tests -------------------------------------------------


@pytest.mark.django_db
def test_it_accepts_a_valid_payload_and_returns_204(client):
    p = dom_project()
    assert_text(post(client, p, session_payload()), 204, "")
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_it_persists_the_session_under_its_iso_week(client, frozen):
    p = dom_project()
    body = session_payload()
    post(client, p, body)
    event = Event.objects.get()
    assert event.event_id == f"dom-2026-W22-{body['session_id']}"
    assert event.install_id == body["session_id"]
    assert event.name == "session"
    # The week's one timestamp (Monday 00:00 UTC): the dedupe key is (event_id, timestamp).
    assert event.timestamp == MONDAY and event.received_at == frozen["now"]
    assert event.app_version == "0.4.2" and event.os == "linux"
    assert event.properties == {
        "protocol_version": "1.0.0",
        "node_version": "v22.11.0",
        "primary_framework": "react",
    }
    fold()
    assert DailyActivity.objects.get().day == dt.date(2026, 5, 25)


@pytest.mark.django_db
def test_a_duplicate_post_within_the_same_week_is_204_and_stored_once(client, frozen):
    p = dom_project()
    body = session_payload()
    assert post(client, p, body).status_code == 204
    frozen["now"] += dt.timedelta(days=6, hours=13)  # Sunday 23:00, still W22
    assert_text(post(client, p, body), 204, "")
    assert Event.objects.count() == 1
    fold()
    assert Install.objects.get().event_count == 1


@pytest.mark.django_db
def test_a_repeat_later_in_the_week_is_stored_once_after_the_claim_expired(client, frozen):
    p = dom_project()
    body = session_payload()
    assert post(client, p, body).status_code == 204
    forget_claims()  # the claim's TTL is over: only the database's (event_id, timestamp) is left
    frozen["now"] += dt.timedelta(days=4)
    assert_text(post(client, p, body), 204, "")
    assert Event.objects.count() == 1
    fold()
    assert Install.objects.get().event_count == 1


@pytest.mark.django_db
def test_it_rejects_unknown_fields(client):
    p = dom_project()
    r = post(client, p, session_payload(hostname="dev-laptop"))
    assert_text(r, 400, "invalid payload")
    assert Event.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("missing", sorted(domscribe.FIELDS))
def test_it_rejects_payloads_missing_a_required_field(client, missing):
    p = dom_project()
    body = session_payload()
    del body[missing]
    assert_text(post(client, p, body), 400, "invalid payload")
    assert Event.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "", "application/jso"]
)
def test_it_rejects_a_non_json_content_type(client, content_type):
    p = dom_project()
    assert_text(
        post(client, p, session_payload(), content_type=content_type), 415, "unsupported media type"
    )
    assert Event.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body", ["{", " ", "not json", '{"a": NaN}', b"\xff\xfe", "[" * 1000 + "]" * 20]
)
def test_it_rejects_invalid_json(client, body):
    p = dom_project()
    assert_text(post(client, p, body), 400, "invalid json")
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_it_rejects_an_oversized_payload_by_declared_content_length(client):
    p = dom_project()
    body = json.dumps(session_payload()).encode().ljust(1025)
    assert_text(post(client, p, body), 413, "payload too large")
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_it_rejects_an_oversized_payload_streamed_beyond_the_cap(client):
    p = dom_project()
    data = json.dumps(session_payload()).encode().ljust(4096)
    r = client.post(
        f"/p/{p.project.slug}/v1/session",
        data=data,
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(data)},
    )
    assert_text(r, 413, "payload too large")
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_it_validates_the_platform_enum(client):
    p = dom_project()
    assert_text(post(client, p, session_payload(platform="sunos")), 400, "invalid payload")
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_it_validates_the_session_id_charset(client):
    p = dom_project()
    assert_text(post(client, p, session_payload(session_id="abc/def-123")), 400, "invalid payload")
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_it_sets_cache_control_no_store_and_security_headers(client):
    p = dom_project()
    r = post(client, p, session_payload())
    for name, value in SECURITY.items():
        assert r[name] == value


# --- Routing: the worker's 3 tests -----------------------------------------------------------


@pytest.mark.django_db
def test_get_on_v1_session_is_405_with_allow_post(client):
    p = dom_project()
    r = get(client, p, "v1/session")
    assert_text(r, 405, "method not allowed")
    assert r["Allow"] == "POST"


@pytest.mark.django_db
def test_healthz_is_200_ok(client):
    p = dom_project()
    assert_text(get(client, p, "healthz"), 200, "ok")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["", "v1", "v1/session/", "v1/sessions", "telemetry", "v2/wau/x"])
def test_unknown_paths_are_404_not_found(client, path):
    p = dom_project()
    assert_text(get(client, p, path), 404, "not found")


# --- GET /v1/wau/<week>: the worker's 3 tests ------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("token", [None, "", "wrong-token", "op_"])
def test_wau_is_403_without_a_valid_token(client, token):
    p = dom_project()
    query = "" if token is None else f"?token={token}"
    assert_text(get(client, p, f"v1/wau/2026-W22{query}"), 403, "forbidden")


@pytest.mark.django_db
@pytest.mark.parametrize("week", ["2026-22", "2026-W2", "26-W22", "2026-w22", "2026-W٢٢", "x"])
def test_wau_is_400_on_a_malformed_week(client, week):
    p = dom_project()
    r = get(client, p, f"v1/wau/{week}", data={"token": p.operator_token})
    assert_text(r, 400, "invalid week")


@pytest.mark.django_db
def test_wau_counts_unique_sessions_in_a_week(client, frozen):
    p = dom_project()
    sessions = [session_payload() for _ in range(3)]
    for body in [*sessions, sessions[0]]:
        assert post(client, p, body).status_code == 204
    frozen["now"] += dt.timedelta(days=3)
    assert post(client, p, sessions[1]).status_code == 204  # same week: a duplicate
    frozen["now"] = MONDAY + dt.timedelta(days=7)  # 2026-W23
    assert post(client, p, sessions[2]).status_code == 204
    r = get(client, p, "v1/wau/2026-W22", data={"token": p.operator_token})
    assert r.status_code == 200
    assert r["Content-Type"] == "application/json"
    assert r.content == b'{"week":"2026-W22","weekly_active_sessions":3}'
    r = get(client, p, "v1/wau/2026-W23", data={"token": p.operator_token})
    assert r.json() == {"week": "2026-W23", "weekly_active_sessions": 1}
    assert Event.objects.count() == 4


# --- isoWeek: the worker's 8 reference dates -------------------------------------------------


@pytest.mark.parametrize(
    ("day", "week"),
    [
        ("2024-01-01", "2024-W01"),
        ("2023-01-01", "2022-W52"),
        ("2025-12-29", "2026-W01"),
        ("2026-01-01", "2026-W01"),
        ("2026-05-29", "2026-W22"),
        ("2026-06-12", "2026-W24"),
        ("2026-08-20", "2026-W34"),
        ("2020-12-31", "2020-W53"),
    ],
)
def test_iso_week_of_the_reference_dates(day, week):
    assert domscribe.iso_week(dt.date.fromisoformat(day)) == week
    # The server clock is an aware UTC datetime; late evening stays on the same UTC day.
    moment = dt.datetime.fromisoformat(f"{day}T23:59:59+00:00")
    assert domscribe.iso_week(moment) == week


# --- Our additions: the project's token in either place, rate limits -------------------------


@pytest.mark.django_db
def test_wau_accepts_the_operator_token_as_a_bearer_header(client):
    p = dom_project()
    post(client, p, session_payload())
    week = domscribe.iso_week(dt.datetime.now(dt.UTC))
    r = get(client, p, f"v1/wau/{week}", HTTP_AUTHORIZATION=f"Bearer {p.operator_token}")
    assert r.status_code == 200
    assert r.json() == {"week": week, "weekly_active_sessions": 1}


@pytest.mark.django_db
def test_wau_checks_the_token_before_the_week(client):
    p = dom_project()
    assert_text(get(client, p, "v1/wau/garbage?token=nope"), 403, "forbidden")
    assert_text(
        get(client, p, "v1/wau/garbage", HTTP_AUTHORIZATION="Bearer nope"), 403, "forbidden"
    )


@pytest.mark.django_db
def test_wau_is_404_when_the_project_has_no_operator_token(client):
    p = dom_project()
    Project.objects.filter(pk=p.project.pk).update(operator_token_hash="")
    assert_text(
        get(client, p, "v1/wau/2026-W22", data={"token": p.operator_token}), 404, "not found"
    )


@pytest.mark.django_db
@pytest.mark.parametrize("week", ["2026-W00", "2026-W54", "2025-W53", "0000-W01"])
def test_wau_of_a_week_no_calendar_has_is_zero(client, week):
    p = dom_project()
    r = get(client, p, f"v1/wau/{week}", data={"token": p.operator_token})
    assert (
        r.content
        == json.dumps({"week": week, "weekly_active_sessions": 0}, separators=(",", ":")).encode()
    )


@pytest.mark.django_db
def test_the_ip_limit_answers_rate_limited_with_retry_after(client):
    p = dom_project(install_rate="10/h", ip_rate="2/h")
    assert post(client, p, session_payload()).status_code == 204
    assert post(client, p, session_payload()).status_code == 204
    r = post(client, p, session_payload())
    assert_text(r, 429, "rate limited")
    assert 1 <= int(r["Retry-After"]) <= 3600
    assert post(client, p, session_payload(), REMOTE_ADDR="198.51.100.4").status_code == 204
    assert Event.objects.count() == 3


@pytest.mark.django_db
def test_a_repeated_session_uses_no_quota(client):
    p = dom_project(install_rate="10/h", ip_rate="1/h")
    body = session_payload()
    for _ in range(5):
        assert post(client, p, body).status_code == 204
    assert_text(post(client, p, session_payload()), 429, "rate limited")
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_a_new_week_is_a_new_event_for_the_same_session(client, frozen):
    p = dom_project()
    body = session_payload()
    frozen["now"] = MONDAY - dt.timedelta(seconds=1)  # Sunday 23:59:59, 2026-W21
    post(client, p, body)
    frozen["now"] = MONDAY
    post(client, p, body)
    assert sorted(Event.objects.values_list("event_id", flat=True)) == [
        f"dom-2026-W21-{body['session_id']}",
        f"dom-2026-W22-{body['session_id']}",
    ]


@pytest.mark.django_db
def test_a_64_character_session_id_gets_a_hashed_event_id_that_still_dedupes(client):
    p = dom_project()
    body = session_payload(session_id="s" * 64)
    assert post(client, p, body).status_code == 204
    assert post(client, p, body).status_code == 204
    event = Event.objects.get()
    assert len(event.event_id) == 64 and "~" in event.event_id
    assert event.install_id == "s" * 64


# --- Bad input: each gets the contract's own status and body ---------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch", "delete", "options"])
def test_every_other_method_on_v1_session_is_405(client, method):
    p = dom_project()
    r = getattr(client, method)(f"/p/{p.project.slug}/v1/session")
    assert_text(r, 405, "method not allowed")
    assert r["Allow"] == "POST"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"session_id": "short7!"},
        {"session_id": "a" * 7},
        {"session_id": "a" * 65},
        {"session_id": "abcdefgh\n"},
        {"session_id": 12345678},
        {"platform": "Linux"},
        {"primary_framework": "angular"},
        {"protocol_version": "1.0"},
        {"protocol_version": "1.0.0+build"},
        {"daemon_version": "\uff11.0.0"},  # a fullwidth digit one
        {"daemon_version": "1.0.0-" + "a" * 60},
        {"node_version": "22"},
        {"node_version": None},
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))!r}"[:40],
)
def test_every_field_breaking_the_schema_is_invalid_payload(client, change):
    p = dom_project()
    assert_text(post(client, p, session_payload(**change)), 400, "invalid payload")
    assert Event.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["[]", "null", '"text"', "1"])
def test_a_json_body_that_is_not_an_object_is_invalid_payload(client, body):
    p = dom_project()
    assert_text(post(client, p, body), 400, "invalid payload")


@pytest.mark.django_db
def test_prerelease_versions_and_a_bare_node_version_are_accepted(client):
    p = dom_project()
    body = session_payload(
        protocol_version="1.0.0-rc.1", daemon_version="0.5.0-beta-2", node_version="22.1.0"
    )
    assert post(client, p, body).status_code == 204


@pytest.mark.django_db
def test_a_body_that_cannot_be_read_is_400(client):
    p = dom_project()

    class Broken(io.RawIOBase):
        def read(self, size=-1):
            raise OSError("connection reset")

    r = client.post(
        f"/p/{p.project.slug}/v1/session",
        data=b"{}",
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": Broken()},
    )
    assert_text(r, 400, "could not read body")


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
def test_an_unreachable_cache_is_a_text_503_and_stores_nothing(client, settings):
    p = dom_project()
    r = post(client, p, session_payload())
    assert_text(r, 503, "service unavailable")
    assert r["Retry-After"] == str(settings.TELEMETRY_RETRY_AFTER_SECONDS)
    assert Event.objects.count() == 0
    fold()
    assert Install.objects.count() == 0


@pytest.mark.django_db
def test_every_response_carries_the_security_headers(client):
    p = dom_project()
    responses = [
        post(client, p, session_payload()),
        post(client, p, "{", content_type="application/json"),
        post(client, p, session_payload(), content_type="text/plain"),
        get(client, p, "v1/session"),
        get(client, p, "healthz"),
        get(client, p, "nowhere"),
        get(client, p, "v1/wau/2026-W22"),
        get(client, p, "v1/wau/2026-W22", data={"token": p.operator_token}),
    ]
    for r in responses:
        for name, value in SECURITY.items():
            assert r[name] == value, (r.status_code, name)


@pytest.mark.django_db
def test_no_raw_ip_is_stored(client):
    p = dom_project()
    post(client, p, session_payload())
    event = Event.objects.get()
    assert len(event.ip_hash) == 32
    fold()
    rows = [*Event.objects.values(), *Install.objects.values(), *DailyActivity.objects.values()]
    assert IP not in json.dumps(rows, default=str)


@pytest.mark.django_db
@override_settings(ALLOWED_HOSTS=["telemetry.example.test", "testserver"])
def test_the_project_hostname_serves_the_worker_at_the_root_path(client):
    p = dom_project(hostnames=["telemetry.example.test"])
    host = {"HTTP_HOST": "telemetry.example.test"}
    r = client.post(
        "/v1/session", data=json.dumps(session_payload()), content_type="application/json", **host
    )
    assert_text(r, 204, "")
    assert Event.objects.get().project_id == p.project.pk
    assert_text(client.get("/healthz", **host), 200, "ok")
    assert_text(client.get("/", **host), 404, "not found")
    week = domscribe.iso_week(dt.datetime.now(dt.UTC))
    r = client.get(f"/v1/wau/{week}", {"token": p.operator_token}, **host)
    assert r.json() == {"week": week, "weekly_active_sessions": 1}


# --- Concurrency -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_sessions_from_one_ip_accept_exactly_the_ip_limit():
    p = dom_project(install_rate="10/h", ip_rate="10/h")
    responses = burst(50, lambda i: post(Client(), p, session_payload()))
    statuses = [r.status_code for r in responses]
    assert statuses.count(204) == 10
    assert statuses.count(429) == 40
    assert {r.content for r in responses if r.status_code == 429} == {b"rate limited"}
    assert Event.objects.count() == 10
    fold()
    assert DailyActivity.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_copies_of_one_session_are_stored_once():
    p = dom_project(install_rate="10/h", ip_rate="10/h")
    body = session_payload()
    statuses = burst(50, lambda i: post(Client(), p, body).status_code)
    assert statuses == [204] * 50
    assert Event.objects.count() == 1
    fold()
    assert Install.objects.get().event_count == 1
