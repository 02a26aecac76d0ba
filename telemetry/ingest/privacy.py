"""Client IPs, daily salts, HMAC hashing and PII redaction.

A raw IP lives only in the request object: it is hashed here with the day's salt before it is
stored, and salts older than 48 hours are destroyed; its rate-limit key is a keyed hash too.
"""

import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import secrets
from functools import lru_cache

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest

from telemetry.models import IpSalt

SALT_KEEP_HOURS = 48


@lru_cache(maxsize=8)
def _trusted_networks(cidrs: tuple[str, ...]) -> tuple[ipaddress._BaseNetwork, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def _parse_ip(value: str) -> ipaddress._BaseAddress | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the right-most untrusted X-Forwarded-For hop when a trusted proxy sent it."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    networks = _trusted_networks(tuple(settings.TRUSTED_PROXIES))
    peer = _parse_ip(remote)
    if peer is None or not networks or not any(peer in n for n in networks):
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hop = peer
    for part in reversed(forwarded.split(",")):
        candidate = _parse_ip(part)
        if candidate is None:
            # A garbled hop is no address: trust stops at the last proxy we could read.
            break
        hop = candidate
        if not any(candidate in n for n in networks):
            break
    return str(hop)


_salts: dict[dt.date, bytes] = {}


def salt_for(day: dt.date) -> bytes:
    """The day's salt, created on first use; cached per process (salts never change once made)."""
    salt = _salts.get(day)
    if salt is not None:
        return salt
    row = IpSalt.objects.filter(day=day).first()
    if row is None:
        try:
            with transaction.atomic():
                row = IpSalt.objects.create(day=day, salt=secrets.token_hex(32))
        except IntegrityError:
            row = IpSalt.objects.get(day=day)
    salt = bytes.fromhex(row.salt)
    if len(_salts) > 4:
        _salts.clear()
    _salts[day] = salt
    return salt


def forget_salts() -> None:
    """Drop this process's salt cache (after rotation, and between tests)."""
    _salts.clear()


def hash_ip(*, ip: str, project_id: int, now: dt.datetime) -> str:
    """HMAC-SHA256(daily salt, project id + IP), truncated: linkable for a day, then never."""
    salt = salt_for(now.astimezone(dt.UTC).date())
    digest = hmac.new(salt, f"{project_id}:{ip}".encode(), hashlib.sha256).hexdigest()
    return digest[:32]


def ip_rate_key(*, ip: str, project_id: int) -> str:
    """The client IP's rate-limit counter value: HMAC-SHA256 of project id + IP under a secret
    derived from SECRET_KEY, truncated like hash_ip.

    Not the daily salt: a salted hash changes at 00:00 UTC, which handed every IP a fresh quota
    in the middle of its window. This key is the same in every window, so a window that spans
    midnight keeps one counter; the raw IP still never reaches the cache (django-ratelimit
    hashes this value again, with the window, into the counter's key, which expires with it).
    """
    digest = hmac.new(
        _rate_key_secret(settings.SECRET_KEY), f"{project_id}:{ip}".encode(), "sha256"
    )
    return digest.hexdigest()[:32]


@lru_cache(maxsize=2)
def _rate_key_secret(secret_key: str) -> bytes:
    return hashlib.sha256(f"telemetry.ip-rate-key:{secret_key}".encode()).digest()


_PII_PATTERNS = [
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    re.compile(r"\b(?:sk|pk|api|key|token)[-_][A-Za-z0-9_-]{8,}\b", re.IGNORECASE),
    re.compile(r"\b(?:\d[ -]?){13,19}\b"),
    re.compile(r"(?<![\w.])\+?\d{1,3}?[ .-]?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b"),
]
REDACTED = "[REDACTED]"
# Any of the patterns, in one scan: a string it does not match is left as it is by every one
# (most strings), so only a match pays for the replacements in turn.
_ANY_PII = re.compile(
    "|".join(f"(?{'i' if p.flags & re.IGNORECASE else ''}:{p.pattern})" for p in _PII_PATTERNS)
)


def redact(value: object) -> object:
    """Replace e-mail addresses, API-key-like tokens, card and phone numbers in every string."""
    if isinstance(value, str):
        if _ANY_PII.search(value) is None:
            return value
        for pattern in _PII_PATTERNS:
            value = pattern.sub(REDACTED, value)
        return value
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
