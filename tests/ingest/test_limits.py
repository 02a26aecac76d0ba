"""Rate limits per install id and per client IP: exact, refund-aware, honest Retry-After."""

import datetime as dt
import json
import zlib

import pytest
from django.conf import settings
from django.test import Client, override_settings

from telemetry.ingest import limits
from telemetry.ingest.pipeline import ACCEPTED, LIMITED, ingest
from telemetry.ingest.schema import IncomingEvent
from telemetry.models import Event
from tests.clock import LimiterClock
from tests.concurrency import burst
from tests.factories import make_project, native_event

URL = "/api/v1/events"


def post(client, event, key, ip="203.0.113.7"):
    return client.post(
        URL,
        data=json.dumps(event),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        REMOTE_ADDR=ip,
    )


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_events_for_one_install_accept_exactly_ten():
    p = make_project(install_rate="10/h", ip_rate="1000/h")
    statuses = burst(
        50,
        lambda i: post(
            Client(), native_event(install_id="inst_burst001"), p.ingest_key
        ).status_code,
    )
    assert statuses.count(202) == 10
    assert statuses.count(429) == 40
    assert Event.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_events_from_one_ip_accept_exactly_the_ip_limit():
    p = make_project(install_rate="100/h", ip_rate="10/h")
    statuses = burst(50, lambda i: post(Client(), native_event(), p.ingest_key).status_code)
    assert statuses.count(202) == 10
    assert Event.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_concurrent_copies_of_one_event_are_stored_once():
    p = make_project()
    event = native_event()
    bodies = burst(20, lambda i: post(Client(), event, p.ingest_key).json())
    assert sum(b["accepted"] for b in bodies) == 1
    assert sum(b["duplicates"] for b in bodies) == 19
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_duplicate_event_uses_no_quota(client):
    p = make_project(install_rate="2/h")
    first = native_event(install_id="inst_dupe0001")
    assert post(client, first, p.ingest_key).status_code == 202
    for _ in range(5):
        assert post(client, first, p.ingest_key).json()["duplicates"] == 1
    second = native_event(install_id="inst_dupe0001")
    assert post(client, second, p.ingest_key).status_code == 202
    third = native_event(install_id="inst_dupe0001")
    assert post(client, third, p.ingest_key).status_code == 429


@pytest.mark.django_db
def test_429_carries_the_real_seconds_to_the_window_end(client):
    p = make_project(install_rate="1/h")
    post(client, native_event(install_id="inst_retry001"), p.ingest_key)
    r = post(client, native_event(install_id="inst_retry001"), p.ingest_key)
    assert r.status_code == 429
    retry = int(r["Retry-After"])
    assert 1 <= retry <= 3600
    assert r.json()["retry_after"] == retry
    assert r.json()["error"] == "rate_limited"
    assert "install id" in r.json()["detail"]


@pytest.mark.django_db
def test_an_event_refused_by_the_ip_limit_gives_its_install_hit_back(client):
    p = make_project(install_rate="2/h", ip_rate="1/h")
    install = "inst_refund01"
    assert (
        post(client, native_event(install_id=install), p.ingest_key, ip="198.51.100.1").status_code
        == 202
    )
    r = post(client, native_event(install_id=install), p.ingest_key, ip="198.51.100.1")
    assert r.status_code == 429 and "client IP" in r.json()["detail"]
    # The refused event did not count: the install still has one of its two left.
    assert (
        post(client, native_event(install_id=install), p.ingest_key, ip="198.51.100.2").status_code
        == 202
    )
    assert Event.objects.count() == 2


@pytest.mark.django_db
def test_a_batch_is_charged_per_event_and_reports_the_overflow(client):
    p = make_project(install_rate="3/h")
    events = [native_event(install_id="inst_batch001") for _ in range(5)]
    r = client.post(
        URL,
        data=json.dumps({"events": events}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}",
    )
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 3
    assert [x["index"] for x in body["rejected"]] == [3, 4]
    assert int(r["Retry-After"]) >= 1
    assert Event.objects.count() == 3


@pytest.mark.django_db
def test_projects_have_separate_counters(client):
    a = make_project(install_rate="1/h")
    b = make_project(install_rate="1/h")
    event = dict(install_id="inst_shared01")
    assert post(client, native_event(**event), a.ingest_key).status_code == 202
    assert post(client, native_event(**event), b.ingest_key).status_code == 202


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
def test_an_unreachable_cache_gives_503_and_stores_nothing(client):
    p = make_project()
    r = post(client, native_event(), p.ingest_key)
    assert r.status_code == 503
    assert r.json() == {
        "error": "service_unavailable",
        "detail": "cache unavailable, retry later",  # the designed outage, not a crash
        "retry_after": int(r["Retry-After"]),
    }
    assert int(r["Retry-After"]) > 0
    assert Event.objects.count() == 0


@pytest.mark.django_db
@override_settings(
    RATELIMIT_FAIL_OPEN=True,
    CACHES={
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    },
)
def test_fail_open_accepts_when_the_cache_is_unreachable(client):
    p = make_project()
    r = post(client, native_event(), p.ingest_key)
    assert r.status_code == 202
    assert Event.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_copies_of_one_event_are_never_rate_limited():
    p = make_project(install_rate="2/h")
    event = native_event(install_id="inst_copies01")
    bodies = burst(30, lambda i: post(Client(), event, p.ingest_key).json())
    assert sum(b.get("accepted", 0) for b in bodies) == 1
    assert sum(b.get("duplicates", 0) for b in bodies) == 29
    assert Event.objects.count() == 1
    # The copies used no quota: one more distinct event still fits the limit of two.
    assert post(Client(), native_event(install_id="inst_copies01"), p.ingest_key).status_code == 202


# --- exact edges: the clock is frozen at chosen instants -------------------------------------

SECOND = dt.timedelta(seconds=1)


def _one(p, *, install: str, ip: str, now: dt.datetime):
    event = IncomingEvent(install_id=install, name="app.start", timestamp=now)
    return ingest(project=p, events=[event], client_ip=ip, now=now).outcomes[0]


@pytest.mark.django_db
def test_an_ip_keeps_its_quota_across_utc_midnight_inside_one_window(monkeypatch):
    p = make_project(install_rate="1000/h", ip_rate="2/h").project
    midnight = dt.datetime(2031, 3, 4, tzinfo=dt.UTC)
    before, after = midnight - 5 * SECOND, midnight + 5 * SECOND
    clock = LimiterClock(monkeypatch, before)
    # Windows are staggered per counter; take an IP whose window spans [before, after].
    for n in range(50):
        ip = f"198.51.100.{n + 1}"
        assert _one(p, install=f"inst_a{n:07d}", ip=ip, now=before).status == ACCEPTED
        assert _one(p, install=f"inst_b{n:07d}", ip=ip, now=before).status == ACCEPTED
        spent = _one(p, install=f"inst_c{n:07d}", ip=ip, now=before)
        assert (spent.status, spent.limited_by) == (LIMITED, "ip")
        if spent.retry_after > 11:
            break
    clock.set(after)
    late = _one(p, install=f"inst_d{n:07d}", ip=ip, now=after)
    assert (late.status, late.limited_by) == (LIMITED, "ip")  # no fresh quota at 00:00 UTC
    assert abs(late.retry_after - (spent.retry_after - 10)) <= 1


@pytest.mark.django_db
def test_a_window_rollover_resets_the_counter_and_retry_after_is_the_real_wait(client, monkeypatch):
    p = make_project(install_rate="2/h", ip_rate="1000/h")
    install, group = "inst_roll0001", f"tm:{p.project.pk}:install"
    start = dt.datetime(2031, 3, 4, 10, 17, 23, tzinfo=dt.UTC)
    clock = LimiterClock(monkeypatch, start)
    first_window = clock.counter(group, install, "2/h").key
    for _ in range(2):
        assert post(client, native_event(install_id=install), p.ingest_key).status_code == 202
    r = post(client, native_event(install_id=install), p.ingest_key)
    assert r.status_code == 429
    retry_after = int(r["Retry-After"])
    # Find the real end of the window, by bisection on the instant the counter reads 0 again.
    lo, hi = 0, 3601  # seconds after start: spent at lo, surely reset by hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        clock.set(start + mid * SECOND)
        if clock.counter(group, install, "2/h").count == 0:
            hi = mid
        else:
            lo = mid
    assert abs(retry_after - hi) <= 1, (retry_after, hi)
    clock.set(start + lo * SECOND)  # the window's last second: still spent
    assert post(client, native_event(install_id=install), p.ingest_key).status_code == 429
    clock.set(start + hi * SECOND)  # the next window: a fresh counter
    assert post(client, native_event(install_id=install), p.ingest_key).status_code == 202
    # Hits handed back after the rollover go to the window they were charged in.
    limits.refund({first_window: 2})
    assert clock.counter(group, install, "2/h").count == 1
    assert post(client, native_event(install_id=install), p.ingest_key).status_code == 202
    r = post(client, native_event(install_id=install), p.ingest_key)
    assert r.status_code == 429
    assert abs(int(r["Retry-After"]) - 3600) <= 1  # a whole window from its first second


@pytest.mark.django_db
def test_a_new_counter_holds_its_first_charge_and_expires_with_its_window():
    # The counter a window's first charge creates starts at that charge and carries the
    # window's expiry: django-ratelimit reads the same key, and a counter never outlives it.
    from django.core.cache import cache
    from django_ratelimit.core import EXPIRATION_FUDGE, _get_window, _make_cache_key

    p = make_project(install_rate="100/h", ip_rate="1000/h").project
    now = dt.datetime.now(dt.UTC)
    events = [
        IncomingEvent(install_id="inst_first001", name="app.start", timestamp=now, event_id=eid)
        for eid in ("evt_first001", "evt_first002", "evt_first003")
    ]
    result = ingest(project=p, events=events, client_ip="203.0.113.9", limit_key="gateway")
    assert [o.status for o in result.outcomes] == [ACCEPTED] * 3
    for group, value, rate, period in (
        (f"tm:{p.pk}:install", "inst_first001", p.install_rate, 3600),
        (f"tm:{p.pk}:key", "gateway", p.ip_rate, 3600),
    ):
        key = _make_cache_key(group, _get_window(value, period), rate, value, None)
        assert cache.get(key) == 3
        if hasattr(cache, "ttl"):  # Redis
            assert 0 < cache.ttl(key) <= period + EXPIRATION_FUDGE
    (usage,) = limits.charge([limits.Charge(f"tm:{p.pk}:key", "gateway", p.ip_rate, 2)])
    assert usage.count == 5
    (usage,) = limits.charge([limits.Charge(f"tm:{p.pk}:key", "other", p.ip_rate, 2)])
    assert usage.count == 2


@pytest.mark.parametrize("rate", ["10/s", "7/m", "1000000/h", "5/15m", "3/d", "100/2h"])
def test_counter_keys_and_windows_are_django_ratelimits_own(rate, monkeypatch):
    # The limiter names a request's counters itself; django-ratelimit's decorators and
    # get_usage must find the same keys, window by window.
    from django_ratelimit.core import _get_window, _make_cache_key, _split_rate

    limit, period = _split_rate(rate)
    values = ["inst_0001", "203.0.113.7", "ünïcødé-install", "gateway", "x" * 64]
    # Besides a few plain instants, the two around the first value's jitter: its window ends
    # this very second, or ended a second ago and the next one is taken.
    start = 1_700_000_000 - 1_700_000_000 % period + zlib.crc32(values[0].encode()) % period
    for now in (1_700_000_000, 1_700_000_000 + period // 2 + 1, 1_764_892_799, start, start + 1):
        monkeypatch.setattr("time.time", lambda now=now: now + 0.25)
        charges = [limits.Charge(f"tm:{i}:install", v, rate, 1) for i, v in enumerate(values)]
        expected = []
        for c in charges:
            window = _get_window(c.value, period)
            key = _make_cache_key(c.group, window, rate, c.value, None)
            expected.append((key, window, limit, period))
        assert limits._prepare(charges) == expected


def test_cache_keys_are_each_caches_own_make_key():
    # The script is handed full cache keys: they must be what the cache itself reads and
    # refunds, written out once with the default key function and asked of make_key otherwise.
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    keys = ["rl:0123abcd", "tm:1:claim:evt_00000001", "ünïcødé"]
    default = caches[settings.RATELIMIT_USE_CACHE]
    custom = LocMemCache(
        "custom-keys",
        {
            "KEY_PREFIX": "p",
            "VERSION": 3,
            "KEY_FUNCTION": lambda key, prefix, v: f"{v}|{prefix}|{key}",
        },
    )
    for cache in (default, custom):
        assert limits._cache_keys(cache, keys) == [cache.make_key(key) for key in keys]
    assert limits._cache_keys(custom, keys)[0] == "3|p|rl:0123abcd"
