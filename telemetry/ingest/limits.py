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
    key: str  # the counter's cache key, for a refund even after the window has moved on
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


def _redis_client(cache):
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client") and hasattr(client, "make_key"):
        return client
    return None


# Every counter of a request in one atomic script: one round trip and one command to pack,
# where a MULTI of SET NX + INCRBY pairs costs the client more than the server for big batches.
_CHARGE = """
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('SET', key, 0, 'EX', ARGV[2 * i], 'NX')
  counts[i] = redis.call('INCRBY', key, ARGV[2 * i - 1])
end
return counts
"""


def charge(charges: list[Charge]) -> list[Usage]:
    """Atomically add each charge to its counter; one Usage per charge, in order.

    On Redis every counter moves in one script call; elsewhere (diskcache) one atomic add + incr
    per counter.
    """
    if not charges:
        return []
    cache = caches[settings.RATELIMIT_USE_CACHE]
    prepared = []
    for c in charges:
        limit, period = _split_rate(c.rate)
        window = _get_window(c.value, period)
        prepared.append(
            (_make_cache_key(c.group, window, c.rate, c.value, None), window, limit, period)
        )
    try:
        redis = _redis_client(cache)
        if redis is not None:
            keys = [str(redis.make_key(key)) for key, *_ in prepared]
            client = redis.get_client(write=True)
            args = []
            for c, (_key, _window, _limit, period) in zip(charges, prepared, strict=True):
                args += [c.n, period + EXPIRATION_FUDGE]
            counts = client.register_script(_CHARGE)(keys=keys, args=args)
        else:
            keys = [key for key, *_ in prepared]
            counts = []
            for c, (key, _window, _limit, period) in zip(charges, prepared, strict=True):
                cache.add(key, 0, period + EXPIRATION_FUDGE)
                counts.append(cache.incr(key, c.n))
    except Exception as exc:  # any backend's connection error: redis, sqlite, socket
        raise LimiterUnavailable(type(exc).__name__) from exc
    now = int(time.time())
    return [
        Usage(key=key, count=int(count), limit=limit, retry_after=max(1, window - now))
        for key, count, (_key, window, limit, _period) in zip(keys, counts, prepared, strict=True)
    ]


# A counter whose window has ended must not come back to life without a TTL.
_DECR_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECRBY', KEYS[1], ARGV[1]) end
return false
"""


def refund(hits: dict[str, int]) -> None:
    """Give back hits (counter key → n) that were charged for events that were not stored."""
    hits = {k: n for k, n in hits.items() if n > 0}
    if not hits:
        return
    cache = caches[settings.RATELIMIT_USE_CACHE]
    try:
        redis = _redis_client(cache)
        if redis is not None:
            client = redis.get_client(write=True)
            pipe = client.pipeline(transaction=False)
            script = client.register_script(_DECR_IF_EXISTS)
            for key, n in hits.items():
                script(keys=[key], args=[n], client=pipe)
            pipe.execute()
        else:
            for key, n in hits.items():
                # ValueError: the window closed meanwhile, nothing to give back.
                with contextlib.suppress(ValueError):
                    cache.decr(key, n)
    except Exception as exc:
        # A refund is a courtesy; failing it only makes the limiter stricter this window.
        log.info("rate-limit refund skipped (%s)", type(exc).__name__)
