"""Ingest keys and operator tokens: generation, hashing, lookup with a short in-process cache.

Keys are random 32-byte secrets, so one SHA-256 is a safe stored form; lookups go by hash, and
operator tokens are compared with hmac.compare_digest.
"""

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from telemetry.models import IngestKey, Project

log = logging.getLogger(__name__)

INGEST_PREFIX = "tk_"
OPERATOR_PREFIX = "op_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def add_ingest_key(project: Project) -> str:
    """Create a key for `project` and return it; only its hash is kept."""
    key = new_secret(INGEST_PREFIX)
    IngestKey.objects.create(project=project, key_hash=hash_secret(key), prefix=key[:10])
    forget_projects()
    return key


def set_operator_token(project: Project) -> str:
    token = new_secret(OPERATOR_PREFIX)
    project.operator_token_hash = hash_secret(token)
    project.save(update_fields=["operator_token_hash"])
    forget_projects()
    return token


def operator_token_matches(project: Project, token: str | None) -> bool:
    if not token or not project.operator_token_hash:
        return False
    return hmac.compare_digest(hash_secret(token), project.operator_token_hash)


# Ingest looks up the same few projects thousands of times a second: keep them for a few seconds.
_cache: dict[tuple[str, str], tuple[float, Any]] = {}


def _cached(kind: str, key: str, load):
    now = time.monotonic()
    hit = _cache.get((kind, key))
    if hit is not None and hit[0] > now:
        return hit[1]
    value = load()
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[(kind, key)] = (now + settings.TELEMETRY_PROJECT_CACHE_SECONDS, value)
    return value


def forget_projects() -> None:
    """Drop cached projects and keys (called on every save in this process)."""
    _cache.clear()
    _last_used.clear()


# Key id → monotonic time this process last wrote its last_used_at. "Last used" is for people
# (is this key still in use?), so minutes are precise enough, and ingest pays one UPDATE per key
# per process per TELEMETRY_KEY_LAST_USED_SECONDS instead of one per event.
_last_used: dict[int, float] = {}


def _note_use(key_id: int) -> None:
    now = time.monotonic()
    written = _last_used.get(key_id)
    if written is not None and now - written < settings.TELEMETRY_KEY_LAST_USED_SECONDS:
        return
    _last_used[key_id] = now
    try:
        IngestKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())
    except DatabaseError:
        # Bookkeeping only: the request itself fails (or not) on its own writes.
        log.warning("could not record the last use of ingest key id %s", key_id)


def project_by_slug(slug: str) -> Project | None:
    return _cached("slug", slug, lambda: Project.objects.filter(slug=slug).first())


def project_for_key(key: str | None) -> Project | None:
    """The project an unrevoked ingest key belongs to, or None."""
    if not key:
        return None
    digest = hash_secret(key)

    def load() -> tuple[Project, int] | None:
        row = (
            IngestKey.objects.select_related("project")
            .filter(key_hash=digest, revoked_at__isnull=True)
            .first()
        )
        return (row.project, row.pk) if row else None

    found = _cached("key", digest, load)
    if found is None:
        return None
    project, key_id = found
    _note_use(key_id)
    return project


def project_for_host(host: str) -> Project | None:
    """The project that claims `host` (without port) among its hostnames."""

    def load() -> dict[str, str]:
        mapping: dict[str, str] = {}
        for slug, hostnames in Project.objects.values_list("slug", "hostnames"):
            for name in hostnames or []:
                mapping[str(name).lower()] = slug
        return mapping

    slug = _cached("hosts", "", load).get(host.lower())
    return project_by_slug(slug) if slug else None


def request_key(request) -> str | None:
    """The ingest key from `Authorization: Bearer …` or `X-Telemetry-Key`."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.META.get("HTTP_X_TELEMETRY_KEY") or None
