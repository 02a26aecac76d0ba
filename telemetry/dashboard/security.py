"""A strict Content-Security-Policy for dashboard pages, and the one login budget shared by the
dashboard and admin logins (keys hashed: no raw IP or username ever reaches the cache)."""

import functools
import hashlib
import hmac

from django.conf import settings
from django_ratelimit.decorators import ratelimit

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


# One counter group for both login forms: an attacker gets one budget per username and per client
# IP, not one at /accounts/login/ and another at /admin/login/.
LOGIN_GROUP = "login"


def limit_logins(view):
    """Count the view's POSTs against the shared per-IP and per-username login budget; the view
    refuses when `request.limited` is set."""
    per_user = ratelimit(
        group=LOGIN_GROUP,
        key=login_username_key,
        rate=lambda group, request: settings.LOGIN_RATE_PER_USER,
        method="POST",
        block=False,
    )
    per_ip = ratelimit(
        group=LOGIN_GROUP,
        key=login_ip_key,
        rate=lambda group, request: settings.LOGIN_RATE_PER_IP,
        method="POST",
        block=False,
    )
    return per_ip(per_user(view))
