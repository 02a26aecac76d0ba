"""A strict Content-Security-Policy for dashboard pages, and the login's rate-limit keys
(hashed: no raw IP or username ever reaches the cache)."""

import functools
import hashlib
import hmac

from django.conf import settings

from telemetry.ingest.privacy import client_ip

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def with_csp(view):
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response.setdefault("Content-Security-Policy", CSP)
        return response

    return wrapped


def _digest(kind: str, value: str) -> str:
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, f"login:{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:32]


def login_ip_key(group, request) -> str:
    return _digest("ip", client_ip(request))


def login_username_key(group, request) -> str:
    return _digest("user", request.POST.get("username", "").strip().lower())
