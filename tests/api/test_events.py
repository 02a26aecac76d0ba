"""POST /api/v1/events: the native front door."""

import datetime as dt
import json
import types

import pytest
from django.utils import timezone

from telemetry.ingest import auth
from telemetry.models import DailyActivity, DailyCount, Event, IngestKey, Install
from telemetry.services.projects import rotate_ingest_key
from tests.factories import fold, iso, make_project, native_event

pytestmark = pytest.mark.django_db

URL = "/api/v1/events"


def post(client, body, key=None, content_type="application/json", url=URL, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    if key:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client.post(url, data=data, content_type=content_type, **headers)


def test_it_accepts_one_event_and_stores_it_with_rollups(client):
    p = make_project()
    event = native_event(install_id="inst_aaaa1111")
    r = post(client, event, p.ingest_key)
    assert r.status_code == 202
    assert r.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    stored = Event.objects.get()
    assert stored.install_id == "inst_aaaa1111"
    assert stored.properties == {"command": "init"}
    assert stored.project_id == p.project.pk
    fold()
    install = Install.objects.get()
    assert install.event_count == 1 and install.last_version == "1.2.3" and install.os == "linux"
    assert DailyActivity.objects.get().events == 1
    assert DailyCount.objects.get(name="app.start").events == 1


def test_it_accepts_the_key_in_x_telemetry_key(client):
    p = make_project()
    r = post(client, native_event(), HTTP_X_TELEMETRY_KEY=p.ingest_key)
    assert r.status_code == 202
    assert Event.objects.count() == 1


def test_duplicate_event_id_is_reported_not_stored_twice(client):
    p = make_project()
    event = native_event()
    post(client, event, p.ingest_key)
    r = post(client, event, p.ingest_key)
    assert r.status_code == 202
    assert r.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert Event.objects.count() == 1
    fold()
    assert Install.objects.get().event_count == 1


def test_batch_stores_good_items_and_reports_bad_ones_by_index(client):
    p = make_project()
    good = [native_event(), native_event()]
    bad = native_event(name="Bad Name")
    r = post(client, {"events": [good[0], bad, good[1]]}, p.ingest_key)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 2
    assert body["rejected"] == [{"index": 1, "error": body["rejected"][0]["error"]}]
    assert body["rejected"][0]["error"].startswith("name:")
    assert Event.objects.count() == 2


def test_batch_counts_repeats_within_itself_as_duplicates(client):
    p = make_project()
    event = native_event()
    r = post(client, {"events": [event, event]}, p.ingest_key)
    assert r.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert Event.objects.count() == 1


def test_batch_over_1000_items_is_413(client):
    p = make_project()
    r = post(client, {"events": [native_event() for _ in range(1001)]}, p.ingest_key)
    assert r.status_code == 413
    assert r.json()["error"] == "batch_too_large"
    assert Event.objects.count() == 0


def test_batch_of_1000_is_stored_whole(client):
    p = make_project()
    r = post(client, {"events": [native_event() for _ in range(1000)]}, p.ingest_key)
    assert r.status_code == 202
    assert r.json()["accepted"] == 1000
    assert Event.objects.count() == 1000
    fold()
    assert Install.objects.count() == 1000


def test_it_rejects_invalid_json_with_400(client):
    p = make_project()
    r = post(client, "{not json", p.ingest_key)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_json"


def test_it_rejects_other_media_types_with_415(client):
    p = make_project()
    r = post(client, json.dumps(native_event()), p.ingest_key, content_type="text/plain")
    assert r.status_code == 415
    assert r.json()["error"] == "unsupported_media_type"
    assert Event.objects.count() == 0


def test_it_rejects_a_body_over_1_mb_with_413(client):
    p = make_project()
    big = native_event(properties={"blob": "x" * 999})
    body = json.dumps({"events": [big] * 1000})  # ~1.1 MB
    assert len(body) > 1024 * 1024
    r = post(client, body, p.ingest_key)
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"
    assert Event.objects.count() == 0


def test_it_requires_a_key_401(client):
    make_project()
    r = post(client, native_event())
    assert r.status_code == 401
    assert r.json()["error"] == "missing_key"


def test_it_refuses_an_unknown_key_403(client):
    make_project()
    r = post(client, native_event(), "tk_not-a-real-key")
    assert r.status_code == 403
    assert r.json()["error"] == "invalid_key"
    assert Event.objects.count() == 0


def test_a_key_for_another_project_is_refused_on_the_slug_route(client):
    a, b = make_project(), make_project()
    r = post(client, native_event(), a.ingest_key, url=f"/p/{b.project.slug}/api/v1/events")
    assert r.status_code == 403


def test_the_slug_route_accepts_the_projects_own_key(client):
    p = make_project()
    r = post(client, native_event(), p.ingest_key, url=f"/p/{p.project.slug}/api/v1/events")
    assert r.status_code == 202
    assert Event.objects.count() == 1


def test_unknown_project_is_404(client):
    r = post(client, native_event(), "tk_x", url="/p/no-such-project/api/v1/events")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_wrong_method_is_405_with_allow(client):
    r = client.get(URL)
    assert r.status_code == 405
    assert "POST" in r["Allow"]
    assert r.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"install_id": "short"}, "install_id"),
        ({"install_id": None}, "install_id"),
        ({"install_id": "has/slash1"}, "install_id"),
        ({"name": "App.Start"}, "name"),
        ({"name": None}, "name"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": "2026-11-25T10:00:00"}, "timestamp"),
        ({"timestamp": None}, "timestamp"),
        ({"event_id": "short"}, "event_id"),
        ({"os": "x" * 65}, "os"),
        ({"properties": [1, 2]}, "properties"),
        ({"properties": {f"k{i}": i for i in range(51)}}, "properties"),
        ({"properties": {"a": {"b": {"c": {"d": 1}}}}}, "properties"),
        ({"properties": {"s": "x" * 1001}}, "properties.s"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_schema_errors_are_400_naming_the_field(client, override, field):
    p = make_project()
    r = post(client, native_event(**override), p.ingest_key)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_event"
    assert r.json()["field"] == field
    assert Event.objects.count() == 0


def test_timestamps_outside_the_window_are_rejected(client):
    p = make_project(retention_days=30)
    now = timezone.now()
    too_old = post(client, native_event(timestamp=iso(now - dt.timedelta(days=31))), p.ingest_key)
    too_new = post(client, native_event(timestamp=iso(now + dt.timedelta(days=2))), p.ingest_key)
    ok = post(client, native_event(timestamp=iso(now - dt.timedelta(days=29))), p.ingest_key)
    assert (too_old.status_code, too_new.status_code, ok.status_code) == (400, 400, 202)


def test_strict_projects_reject_properties_outside_their_schema(client):
    p = make_project()
    p.project.property_schema = {"command": {"type": "string", "max_length": 10}}
    p.project.strict = True
    p.project.save()
    ok = post(client, native_event(properties={"command": "init"}), p.ingest_key)
    unknown = post(client, native_event(properties={"other": 1}), p.ingest_key)
    wrong_type = post(client, native_event(properties={"command": 5}), p.ingest_key)
    too_long = post(client, native_event(properties={"command": "x" * 11}), p.ingest_key)
    assert ok.status_code == 202
    assert unknown.json()["field"] == "properties.other"
    assert wrong_type.json()["field"] == "properties.command"
    assert too_long.status_code == 400
    assert Event.objects.count() == 1


def test_events_from_one_install_on_two_days_make_two_activity_rows(client):
    p = make_project()
    now = timezone.now()
    for days in (0, 1):
        moment = now - dt.timedelta(days=days)
        post(client, native_event(install_id="inst_same0001", timestamp=iso(moment)), p.ingest_key)
    fold()
    install = Install.objects.get()
    assert install.event_count == 2
    assert install.first_seen < install.last_seen
    assert DailyActivity.objects.count() == 2


def test_an_empty_or_wrong_batch_is_400(client):
    p = make_project()
    assert post(client, {"events": []}, p.ingest_key).status_code == 400
    assert post(client, {"events": {}}, p.ingest_key).status_code == 400
    assert post(client, {"events": [], "x": 1}, p.ingest_key).status_code == 400


def test_responses_are_not_cached(client):
    p = make_project()
    r = post(client, native_event(), p.ingest_key)
    assert r["Cache-Control"] == "no-store"


@pytest.mark.parametrize("bad", ["nul\u0000byte", "lone \ud800 surrogate"])
def test_text_no_database_can_hold_is_400_not_503(client, bad):
    p = make_project()
    r = post(client, json.dumps(native_event(properties={"s": bad})), p.ingest_key)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_event"
    assert Event.objects.count() == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"session_id": "a\u0000b"},
        {"properties": {"k\ud800": 1}},
        {"properties": {"s": "x\udfff"}},
        {"os": "\udbff"},
    ],
)
def test_in_a_batch_only_the_event_with_unstorable_text_is_refused(client, bad):
    # The body is scanned once for the escapes that make NUL or a lone surrogate; when one is
    # there, every event is checked string by string, keys included.
    p = make_project()
    events = [
        native_event(install_id="inst_good0001"),
        native_event(install_id="inst_bad00001", **bad),
        native_event(install_id="inst_good0002"),
    ]
    body = json.dumps({"events": events})
    r = post(client, body.replace("\\udbff", "\\uDBFF"), p.ingest_key)
    assert r.status_code == 202
    assert r.json()["accepted"] == 2
    assert [x["index"] for x in r.json()["rejected"]] == [1]
    assert sorted(Event.objects.values_list("install_id", flat=True)) == [
        "inst_good0001",
        "inst_good0002",
    ]


def test_paired_surrogate_escapes_such_as_an_emoji_are_stored(client):
    p = make_project()
    r = post(client, json.dumps(native_event(properties={"mood": "\U0001f600"})), p.ingest_key)
    assert r.status_code == 202
    assert Event.objects.get().properties == {"mood": "\U0001f600"}


def test_properties_nested_as_deep_as_the_parser_allows_are_400_not_500(client):
    p = make_project()
    deep = "[" * 900 + "]" * 900
    body = json.dumps(native_event()).replace(
        '"properties": {', f'"properties": {{"d": {deep}, ', 1
    )
    r = post(client, body, p.ingest_key)
    assert r.status_code == 400
    assert r.json()["field"] == "properties"
    assert Event.objects.count() == 0


def test_ids_with_a_trailing_newline_are_rejected(client):
    p = make_project()
    r = post(client, native_event(install_id="inst_abcd1234\n"), p.ingest_key)
    assert r.status_code == 400
    assert r.json()["field"] == "install_id"


@pytest.mark.parametrize("number", ["1e400", "-2E+999"])
def test_a_number_that_overflows_is_400_not_a_retry_later(client, number):
    # Read as infinity, it reached PostgreSQL's JSON column, which refused it: a 503 and
    # Retry-After for a body that can never be stored.
    p = make_project()
    body = json.dumps({"events": [native_event(), native_event(properties={"n": 1})]})
    r = post(client, body.replace('"n": 1', f'"n": {number}'), p.ingest_key)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_json"
    assert number in r.json()["detail"]
    assert Event.objects.count() == 0


def test_absurdly_nested_json_is_400(client):
    p = make_project()
    r = post(client, "[" * 100_000 + "]" * 100_000, p.ingest_key)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_json"


# --- revoked keys: each web process trusts its copy of a key for TELEMETRY_PROJECT_CACHE_SECONDS


def _frozen_key_cache(monkeypatch, clock: list[float]) -> None:
    monkeypatch.setattr(auth, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))


def test_a_key_revoked_here_is_refused_at_once(client, monkeypatch):
    clock = [1000.0]
    _frozen_key_cache(monkeypatch, clock)
    p = make_project()
    assert post(client, native_event(), p.ingest_key).status_code == 202  # the key is cached
    new_key = rotate_ingest_key(project=p.project)
    r = post(client, native_event(), p.ingest_key)
    assert r.status_code == 403 and r.json()["error"] == "invalid_key"
    assert post(client, native_event(), new_key).status_code == 202
    assert Event.objects.count() == 2


def test_a_key_revoked_by_another_process_is_refused_within_the_documented_delay(
    client, monkeypatch, settings
):
    settings.TELEMETRY_PROJECT_CACHE_SECONDS = 10.0
    clock = [1000.0]
    _frozen_key_cache(monkeypatch, clock)
    p = make_project()
    assert post(client, native_event(), p.ingest_key).status_code == 202  # cached at t=1000
    # Another process revokes it: a plain UPDATE, no signal reaches this process's cache.
    IngestKey.objects.filter(project=p.project).update(revoked_at=timezone.now())
    clock[0] = 1009.9  # the delay: this process still trusts its copy
    assert post(client, native_event(), p.ingest_key).status_code == 202
    clock[0] = 1010.1  # past it: the key is looked up again, and refused
    r = post(client, native_event(), p.ingest_key)
    assert r.status_code == 403 and r.json()["error"] == "invalid_key"
    assert Event.objects.count() == 2
