"""Rate-limit counters per install id and per client (hashed IP or key), on the shared cache.

Keys and windows are django-ratelimit's own (`_make_cache_key`, `_get_window`), so its decorators
and `get_usage` read the same counters. We add two things it lacks: incrementing by n (a batch
charges all its events at once) and, on Redis, every counter of a request in one MULTI round trip.
"""

import contextlib
import hashlib
import logging
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import default_key_func
from django.utils.module_loading import import_string
from django_ratelimit.core import EXPIRATION_FUDGE, _split_rate

log = logging.getLogger(__name__)


class LimiterUnavailable(Exception):
    """The counter store did not answer; the caller fails closed or open per settings."""


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and a batch makes
# a thousand of each.
@dataclass(slots=True)
class Charge:
    """Charge `n` hits to the counter (`group`, `value`) under `rate` such as "10/h"."""

    group: str
    value: str
    rate: str
    n: int


@dataclass(slots=True)
class Usage:
    key: str  # the counter's cache key, for a refund even after the window has moved on
    count: int  # the counter after this charge
    limit: int
    retry_after: int  # seconds until this counter's window ends


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
  if redis.call('SET', key, ARGV[2 * i - 1], 'EX', ARGV[2 * i], 'NX') then
    counts[i] = tonumber(ARGV[2 * i - 1])
  else
    counts[i] = redis.call('INCRBY', key, ARGV[2 * i - 1])
  end
end
return counts
"""


def _prepare(charges: list[Charge]) -> list[tuple[str, int, int, int]]:
    """(cache key, window end, limit, period) of each counter, as django-ratelimit names them.

    The key is `_make_cache_key(group, _get_window(value, period), rate, value, None)`, written
    out here for all of a request's counters at once (tests/ingest/test_limits.py holds the two
    equal): a batch names a thousand install counters, and the library's per-key lookups of
    two settings, rate parsing and clock read were two thirds of that work.
    """
    prefix = getattr(settings, "RATELIMIT_CACHE_PREFIX", "rl:")
    algorithm = getattr(settings, "RATELIMIT_HASH_ALGORITHM", hashlib.sha256)
    if isinstance(algorithm, str):
        algorithm = import_string(algorithm)
    now = int(time.time())
    rates: dict[str, tuple[int, int, str]] = {}
    prepared = []
    for c in charges:
        rate = rates.get(c.rate)
        if rate is None:
            limit, period = _split_rate(c.rate)
            rate = rates[c.rate] = (limit, period, f"{limit:d}/{period:d}s")
        limit, period, safe_rate = rate
        value = c.value
        if period == 1:
            window = now
        else:
            # The window ends at a per-value offset into the period (django-ratelimit's jitter).
            window = now - (now % period) + (zlib.crc32(value.encode()) % period)
            if window < now:
                window += period
        key = prefix + algorithm(f"{c.group}{safe_rate}{value}{window}".encode()).hexdigest()
        prepared.append((key, window, limit, period))
    return prepared


def _cache_keys(cache, keys: list[str]) -> list[str]:
    """`cache.make_key(key)` of each key: with Django's default key function, its
    "prefix:version:key" written out once for all (a batch names two thousand keys)."""
    if cache.key_func is default_key_func:
        head = f"{cache.key_prefix}:{cache.version}:"
        return [head + key for key in keys]
    return [cache.make_key(key) for key in keys]


def charge(charges: list[Charge]) -> list[Usage]:
    """Atomically add each charge to its counter; one Usage per charge, in order.

    On Redis every counter moves in one script call; elsewhere (diskcache) one atomic add + incr
    per counter.
    """
    if not charges:
        return []
    cache = caches[settings.RATELIMIT_USE_CACHE]
    prepared = _prepare(charges)
    try:
        redis = _redis_client(cache)
        if redis is not None:
            # The cache's own make_key: the same string as its client's, which wraps each of a
            # batch's thousands of keys in a CacheKey object first.
            keys = _cache_keys(cache, [key for key, *_ in prepared])
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


# Claims and counters of one request in one atomic script, in the order the contract sets:
# claim each event id (SET NX with a TTL; a copy already claimed is a duplicate and is charged
# nothing), then charge every counter by the number of claimed events that use it.
# KEYS: the counters, then one claim key per event that has an id.
# ARGV: claim TTL, counter count, each counter's TTL, then per event one number: twice its
# install counter's 0-based position (0 for none), plus 1 if it has a claim key (one argument
# an event, not two: a batch's thousand fewer to pack and read). Every event charges the first
# counter, the client's.
_ADMIT = """
local ncounters = tonumber(ARGV[2])
local add = {}
for i = 1, ncounters do add[i] = 0 end
local fresh = {}
local claim = ncounters
local arg = 3 + ncounters
local event = 0
while arg <= #ARGV do
  event = event + 1
  local packed = tonumber(ARGV[arg])
  local install = math.floor(packed / 2)
  local ok = true
  if packed % 2 == 1 then
    claim = claim + 1
    ok = redis.call('SET', KEYS[claim], '1', 'EX', ARGV[1], 'NX')
  end
  if ok then
    fresh[event] = 1
    add[1] = add[1] + 1
    if install > 0 then add[install + 1] = add[install + 1] + 1 end
  else
    fresh[event] = 0
  end
  arg = arg + 1
end
local counts = {}
for i = 1, ncounters do
  if add[i] > 0 then
    -- A new window's counter starts at this charge: one call where SET NX + INCRBY are two.
    if redis.call('SET', KEYS[i], add[i], 'EX', ARGV[2 + i], 'NX') then
      counts[i] = add[i]
    else
      counts[i] = redis.call('INCRBY', KEYS[i], add[i])
    end
  else
    counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
end
return {fresh, counts}
"""


@dataclass(slots=True)
class Admission:
    """What one admit() call did: which events it claimed, and each counter after charging.

    Counters are lists indexed as the `counters` given, not a Usage each: a batch of distinct
    installs has a thousand."""

    fresh: list[bool]  # per event: claimed now (or had no id to claim)
    keys: list[str]  # per counter: its cache key, for a refund even after the window moved on
    counts: list[int]  # per counter: its value after this charge
    limits: list[int]  # per counter: hits allowed in its window
    windows: list[int]  # per counter: when its window ends (epoch seconds)
    added: list[int]  # per counter: hits this call charged
    claim_keys: list[str | None]  # per event: its claim's cache key, to release
    install_of: list[int]  # per event: position of its install counter (0: none)

    def allowed(self, counter: int) -> int:
        """How many of the hits this call charged to `counter` fall within its limit."""
        n = self.added[counter]
        return max(0, min(n, self.limits[counter] - (self.counts[counter] - n)))

    def retry_after(self, counter: int) -> int:
        """Seconds until `counter`'s window ends."""
        return max(1, self.windows[counter] - int(time.time()))


def admit(
    *,
    claims: list[str | None],
    installs: list[int],
    counters: list[Charge],
    claim_ttl: int,
) -> Admission:
    """Claim each event's id and charge the counters of the claimed events, atomically.

    `claims[i]` names event i's claim (None: nothing to dedupe); `installs[i]` is the position
    in `counters` of its install counter (0: none). Every claimed event charges counters[0], the
    client counter. The `n` of each Charge is ignored: it is counted here. On Redis this is one
    script call; on the embedded cache, one atomic add per claim and one add + incr per counter.
    """
    cache = caches[settings.RATELIMIT_USE_CACHE]
    prepared = _prepare(counters)
    try:
        redis = _redis_client(cache)
        if redis is not None:
            counter_keys = _cache_keys(cache, [key for key, *_ in prepared])
            named = _cache_keys(cache, [k for k in claims if k])
            each = iter(named)
            claim_keys = [next(each) if k else None for k in claims]
            args: list = [claim_ttl, len(counters)]
            args += [period + EXPIRATION_FUDGE for *_, period in prepared]
            args += [
                2 * install + (1 if key else 0)
                for install, key in zip(installs, claim_keys, strict=True)
            ]
            client = redis.get_client(write=True)
            fresh_flags, counts = client.register_script(_ADMIT)(
                keys=counter_keys + named, args=args
            )
            fresh = [f == 1 for f in fresh_flags]
            added = _added(fresh, installs, len(counters))
        else:
            counter_keys = [key for key, *_ in prepared]
            claim_keys = list(claims)
            fresh = [key is None or cache.add(key, 1, claim_ttl) for key in claim_keys]
            added = _added(fresh, installs, len(counters))
            counts = []
            for n, (key, _window, _limit, period) in zip(added, prepared, strict=True):
                cache.add(key, 0, period + EXPIRATION_FUDGE)
                counts.append(cache.incr(key, n) if n else cache.get(key, 0))
    except Exception as exc:  # any backend's connection error: redis, sqlite, socket
        raise LimiterUnavailable(type(exc).__name__) from exc
    return Admission(
        fresh=fresh,
        keys=counter_keys,
        counts=[int(count) for count in counts],
        limits=[limit for _key, _window, limit, _period in prepared],
        windows=[window for _key, window, _limit, _period in prepared],
        added=added,
        claim_keys=claim_keys,
        install_of=installs,
    )


def _added(fresh: list[bool], installs: list[int], ncounters: int) -> list[int]:
    added = [0] * ncounters
    for ok, install in zip(fresh, installs, strict=True):
        if ok:
            added[0] += 1
            if install:
                added[install] += 1
    return added


def give_back(admission: Admission, events: list[int], *, release: bool = True) -> None:
    """Refund the hits of `events` (indexes into the admitted request) and, with `release`,
    drop their claims so a retry is not taken for a duplicate. Best effort, like refund()."""
    hits: dict[str, int] = defaultdict(int)
    claims = []
    for i in events:
        if not admission.fresh[i]:
            continue  # a duplicate was charged nothing and claimed nothing
        hits[admission.keys[0]] += 1
        if admission.install_of[i]:
            hits[admission.keys[admission.install_of[i]]] += 1
        if admission.claim_keys[i] and release:
            claims.append(admission.claim_keys[i])
    refund(hits)
    if claims:
        release_claims(claims)


def release_claims(keys: list[str]) -> None:
    cache = caches[settings.RATELIMIT_USE_CACHE]
    try:
        redis = _redis_client(cache)
        if redis is not None:
            redis.get_client(write=True).delete(*keys)
        else:
            for key in keys:
                cache.delete(key)
    except Exception as exc:
        # A claim left behind expires with its TTL; until then a retry answers "duplicate".
        log.warning("claim release skipped (%s)", type(exc).__name__)


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
