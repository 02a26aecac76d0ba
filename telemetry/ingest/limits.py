"""Rate-limit counters per install id and per client (hashed IP or key), on the shared cache.

Keys and windows are django-ratelimit's own (`_make_cache_key`, `_get_window`), so its decorators
and `get_usage` read the same counters. We add two things it lacks: incrementing by n (a batch
charges all its events at once) and, on Redis, every counter of a request in one MULTI round trip.
"""

import contextlib
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django_ratelimit.core import EXPIRATION_FUDGE, _get_window, _make_cache_key, _split_rate

log = logging.getLogger(__name__)


class LimiterUnavailable(Exception):
    """The counter store did not answer; the caller fails closed or open per settings."""


@dataclass(frozen=True, slots=True)
class Charge:
    """Charge `n` hits to the counter (`group`, `value`) under `rate` such as "10/h"."""

    group: str
    value: str
    rate: str
    n: int


@dataclass(frozen=True, slots=True)
class Usage:
    count: int  # the counter after this charge
    limit: int
    retry_after: int  # seconds until this counter's window ends

    def allowed(self, n: int) -> int:
        """How many of the n hits just charged fall within the limit."""
        before = self.count - n
        return max(0, min(n, self.limit - before))


def parse_rate(rate: str) -> tuple[int, int]:
    """'10/h' → (10, 3600); raises ValueError on anything django-ratelimit would not accept."""
    try:
        count, period = _split_rate(rate)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ValueError(f"invalid rate {rate!r}; use N/s, N/m, N/h, N/d or N/15m") from None
    if count < 1 or period < 1:
        raise ValueError(f"invalid rate {rate!r}")
    return count, period


def _key_and_window(charge: Charge) -> tuple[str, int, int, int]:
    limit, period = _split_rate(charge.rate)
    window = _get_window(charge.value, period)
    key = _make_cache_key(charge.group, window, charge.rate, charge.value, None)
    return key, window, limit, period


def _redis_client(cache):
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client") and hasattr(client, "make_key"):
        return client
    return None


def charge(charges: list[Charge]) -> list[Usage]:
    """Atomically add each charge to its counter; one Usage per charge, in order."""
    if not charges:
        return []
    cache = caches[settings.RATELIMIT_USE_CACHE]
    prepared = [_key_and_window(c) for c in charges]
    try:
        redis = _redis_client(cache)
        if redis is not None:
            pipe = redis.get_client(write=True).pipeline(transaction=True)
            for c, (key, _window, _limit, period) in zip(charges, prepared, strict=True):
                full_key = str(redis.make_key(key))
                pipe.set(full_key, 0, ex=period + EXPIRATION_FUDGE, nx=True)
                pipe.incrby(full_key, c.n)
            counts = pipe.execute()[1::2]
        else:
            counts = []
            for c, (key, _window, _limit, period) in zip(charges, prepared, strict=True):
                cache.add(key, 0, period + EXPIRATION_FUDGE)
                counts.append(cache.incr(key, c.n))
    except Exception as exc:  # any backend's connection error: redis, sqlite, socket
        raise LimiterUnavailable(type(exc).__name__) from exc
    now = int(time.time())
    return [
        Usage(count=int(count), limit=limit, retry_after=max(1, window - now))
        for count, (_key, window, limit, _period) in zip(counts, prepared, strict=True)
    ]


def refund(charges: list[Charge]) -> None:
    """Give back hits that were charged but not stored (refused further on, or lost a race)."""
    charges = [c for c in charges if c.n > 0]
    if not charges:
        return
    cache = caches[settings.RATELIMIT_USE_CACHE]
    try:
        redis = _redis_client(cache)
        if redis is not None:
            pipe = redis.get_client(write=True).pipeline(transaction=False)
            for c in charges:
                pipe.decrby(str(redis.make_key(_key_and_window(c)[0])), c.n)
            pipe.execute()
        else:
            for c in charges:
                # ValueError: the window closed meanwhile, nothing to give back.
                with contextlib.suppress(ValueError):
                    cache.decr(_key_and_window(c)[0], c.n)
    except Exception as exc:
        # A refund is a courtesy; failing it only makes the limiter stricter this window.
        log.info("rate-limit refund skipped (%s)", type(exc).__name__)
