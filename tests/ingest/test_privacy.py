"""Client IPs behind proxies, salted hashes, and no raw IP anywhere we write."""

import json

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import RequestFactory, override_settings
from django_ratelimit.core import _get_window, _make_cache_key
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.ingest import limits, privacy
from telemetry.ingest.privacy import client_ip, redact
from telemetry.models import Event, IpSalt
from tests.cachekeys import LimiterSpy, cache_entries, leaks
from tests.factories import make_project, native_event


def ip_of(remote, xff=None):
    meta = {"REMOTE_ADDR": remote}
    if xff is not None:
        meta["HTTP_X_FORWARDED_FOR"] = xff
    return client_ip(RequestFactory().get("/", **meta))


def test_without_trusted_proxies_forwarded_headers_are_ignored():
    assert ip_of("198.51.100.9", "1.2.3.4") == "198.51.100.9"


@override_settings(TRUSTED_PROXIES=["10.0.0.0/8"])
def test_a_trusted_proxy_hands_over_the_rightmost_untrusted_hop():
    assert ip_of("10.0.0.5", "1.2.3.4, 203.0.113.8, 10.0.0.9") == "203.0.113.8"


@override_settings(TRUSTED_PROXIES=["10.0.0.0/8"])
def test_an_untrusted_peer_cannot_spoof_its_address():
    assert ip_of("198.51.100.9", "1.2.3.4") == "198.51.100.9"


@override_settings(TRUSTED_PROXIES=["10.0.0.0/8", "::1/128"])
def test_ipv6_and_garbage_hops():
    assert ip_of("::1", "2001:db8::1") == "2001:db8::1"
    assert ip_of("10.0.0.5", "nonsense") == "10.0.0.5"


def test_redaction_replaces_pii_in_strings():
    value = {
        "msg": "mail bob@example.com key sk_live_abcdefgh12345 card 4111 1111 1111 1111",
        "nested": ["call +1 415 555 0100"],
        "n": 5,
    }
    out = redact(value)
    assert "bob@example.com" not in json.dumps(out)
    assert "sk_live" not in json.dumps(out)
    assert "4111" not in json.dumps(out)
    assert "555" not in json.dumps(out)
    assert out["n"] == 5


def redact_each(text: str) -> str:
    """Redaction as it was before the one-scan check: every pattern replaced in turn."""
    for pattern in privacy._PII_PATTERNS:
        text = pattern.sub(privacy.REDACTED, text)
    return text


PII_PIECES = [
    "bob@example.com", "Sk_live_abcdefgh12345", "TOKEN-abcdefgh", "4111 1111 1111 1111",
    "+1 415 555 0100", "(415) 555-0100", "415.555.0100", "1234567890123", "x@y", "a.b@c.de",
    "v1.2.3", "12:30", "a-b_c", "@", ".", " ", "-", "\n", "é",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PII_PIECES) | st.text(max_size=8), max_size=8).map("".join))
def test_redaction_of_any_string_is_every_pattern_in_turn(text):
    assert redact(text) == redact_each(text)


@pytest.mark.django_db
@override_settings(TRUSTED_PROXIES=["127.0.0.0/8"])
def test_no_raw_ip_reaches_the_database_or_the_cache(client, caplog, monkeypatch):
    spy = LimiterSpy(monkeypatch)
    p = make_project()
    ips = [f"203.0.113.{i}" for i in range(1, 40)] + ["2001:db8::beef"]
    for ip in ips:
        client.post(
            "/api/v1/events",
            data=json.dumps(native_event()),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}",
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=ip,
        )
    assert Event.objects.count() == len(ips)
    hashes = set(Event.objects.values_list("ip_hash", flat=True))
    assert len(hashes) == len(ips)
    dump = _dump_database()
    for ip in ips:
        assert ip not in dump
    assert p.ingest_key not in dump
    # The real counters, listed on either backend: one per install and one per IP at least.
    assert len(cache_entries()) >= 2 * len(ips)
    assert leaks(ips, spy) == []
    for ip in ips:
        assert ip not in caplog.text
    assert IpSalt.objects.count() == 1


@pytest.mark.django_db
def test_the_cache_check_catches_a_limiter_keyed_on_a_raw_ip(client, monkeypatch):
    spy = LimiterSpy(monkeypatch)
    p = make_project()
    ip = "203.0.113.99"
    r = client.post(
        "/api/v1/events",
        data=json.dumps(native_event()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}",
        REMOTE_ADDR=ip,
    )
    assert r.status_code == 202 and leaks([ip], spy) == []
    group = f"tm:{p.project.pk}:ip"
    # A limiter keyed on the raw IP: its counter's key is a hash, so the IP shows nowhere ...
    limits.charge([limits.Charge(group, ip, p.project.ip_rate, 1)])
    assert ip not in repr(cache_entries())
    # ... yet the check finds it, by the value the limiter was keyed on ...
    assert leaks([ip], spy) == [ip]
    # ... and by the key alone, when a counter is written past the spy.
    spy.calls.clear()
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")
    else:
        cache.clear()
    window = _get_window(ip, 3600)
    cache.set(_make_cache_key(group, window, p.project.ip_rate, ip, None), 1, 60)
    assert leaks([ip], spy, extra_counters=[(group, p.project.ip_rate, None)]) == [ip]


def _dump_database() -> str:
    out = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')
            out.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(out)
