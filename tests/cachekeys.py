"""What the shared cache really holds, on Redis and diskcache alike, and whether any rate limiter
was keyed on a raw value (an IP, a username).

django-ratelimit stores a counter under sha256(group + rate + value + window), so a raw IP never
shows in a key even when a limiter is keyed on it: looking for the IP in the key listing cannot
fail. `LimiterSpy` records the values every limiter is keyed on, and `leaks` also recomputes the
key each raw value would have under every counter group seen and looks for it in the listing.
"""

import itertools

import django_ratelimit.core
from django.core.cache import cache
from django_ratelimit.core import _get_window, _make_cache_key, _split_rate

from telemetry.ingest import limits


def cache_entries() -> list[tuple[str, str]]:
    """Every (key, value) in this test run's cache; the caller asserts it is not empty."""
    if hasattr(cache, "delete_pattern"):  # django-redis: only our prefix, never the whole db
        client = cache.client.get_client()
        keys = list(client.scan_iter(match=cache.make_key("*"), count=1000))
        return [
            (k.decode(), repr(client.get(k)) if client.type(k) == b"string" else "") for k in keys
        ]
    shards = cache._cache._shards  # diskcache's FanoutCache: one SQLite file per shard
    return [(str(k), repr(shard.get(k))) for shard in shards for k in shard.iterkeys()]


class LimiterSpy:
    """Records (group, rate, value, methods) of every rate-limit key made, by the ingest limiter
    and by django-ratelimit's decorators (the logins)."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[tuple[str, str, str, object]] = []

        def spy(group, window, rate, value, methods):
            self.calls.append((group, rate, value, methods))
            return _make_cache_key(group, window, rate, value, methods)

        # The ingest limiter names its counters itself, a whole request at once (limits._prepare,
        # held equal to django-ratelimit's keys by tests/ingest/test_limits.py).
        prepare = limits._prepare

        def spy_prepare(charges):
            self.calls.extend((c.group, c.rate, c.value, None) for c in charges)
            return prepare(charges)

        monkeypatch.setattr(django_ratelimit.core, "_make_cache_key", spy)
        monkeypatch.setattr(limits, "_prepare", spy_prepare)

    @property
    def counters(self) -> set[tuple[str, str, object]]:
        return {(group, rate, methods) for group, rate, _value, methods in self.calls}


def raw_key_candidates(raw: str, counters) -> set[str]:
    """The keys a counter keyed on `raw` would have now (this window or the last one)."""
    keys = set()
    for group, rate, methods in counters:
        period = _split_rate(rate)[1]
        window = _get_window(raw, period)
        for w in (window, window - period):
            keys.add(_make_cache_key(group, w, rate, raw, methods))
    return keys


def leaks(raw_values, spy: LimiterSpy, extra_counters=()) -> list[str]:
    """The raw values found anywhere in the cache or keying any limiter; [] when clean."""
    entries = cache_entries()
    text = "\n".join(itertools.chain.from_iterable(entries))
    counters = spy.counters | set(extra_counters)
    found = []
    for raw in raw_values:
        keyed = any(raw in str(value) for _g, _r, value, _m in spy.calls)
        hashed = any(k in text for k in raw_key_candidates(raw, counters))
        if raw in text or keyed or hashed:
            found.append(raw)
    return found
