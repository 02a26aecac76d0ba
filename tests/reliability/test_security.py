"""Security: `check --deploy` with production settings, headers, CSRF, cookies, login limits on
the admin and the dashboard, hashed keys compared in constant time, no user enumeration, and no
URL that shows one maintainer another's project.
"""

import hashlib
import hmac
import json
import re
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from telemetry.models import Event, IngestKey, Project
from tests.clock import LimiterClock
from tests.factories import make_project, native_event
from tests.ingest.test_privacy import _dump_database

PASSWORD = "correct-horse-battery-9"


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DATA_DIR": str(tmp_path),
        "SECRET_KEY": secrets.token_urlsafe(64),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "telemetry.example.org",
    }

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # Before collectstatic every page would fail: the check names it and the fix.
    out = manage("check", "--deploy")
    ids = set(re.findall(r"\((\w+\.[WEC]\d+)\)", out.stdout + out.stderr))
    assert ids == {"security.W021", "telemetry.E001"}, out.stdout + out.stderr
    assert "collectstatic --noinput" in out.stderr
    assert manage("collectstatic", "--noinput", "--verbosity", "0").returncode == 0
    out = manage("check", "--deploy")
    ids = set(re.findall(r"\((\w+\.[WEC]\d+)\)", out.stdout + out.stderr))
    # W021 (HSTS preload) is left to the operator on purpose: README, "Production".
    assert ids == {"security.W021"}, out.stdout + out.stderr


# --- headers, CSRF, cookies ----------------------------------------------------------------------


@pytest.fixture
def member(db):
    user = get_user_model().objects.create_user("maint", password=PASSWORD)
    p = make_project(name="Own project")
    p.project.members.add(user)
    return user, p


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_security_headers_on_every_kind_of_response(client, db):
    for url in ("/healthz", "/api/v1/events", "/accounts/login/", "/p/nope/x"):
        r = client.get(url, secure=True)
        assert r["X-Content-Type-Options"] == "nosniff", url
        assert r["Referrer-Policy"] == "same-origin", url
        assert r["X-Frame-Options"] == "DENY", url
        assert r["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains", url
    assert "Strict-Transport-Security" not in client.get("/healthz")  # only over TLS
    # Behind the TLS-terminating proxy, its X-Forwarded-Proto says the request was HTTPS.
    assert "Strict-Transport-Security" in client.get("/healthz", HTTP_X_FORWARDED_PROTO="https")


DASHBOARD_PAGES = ["", "retention/", "breakdown/", "errors/", "events/", "setup/"]


@pytest.mark.parametrize("page", DASHBOARD_PAGES)
def test_dashboard_pages_carry_a_csp_and_every_post_form_a_csrf_token(member, page):
    user, p = member
    r = logged_in(user).get(f"/dashboard/{p.project.slug}/{page}")
    assert r.status_code == 200
    csp = r["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    _assert_post_forms_have_csrf(r.content.decode())


def test_the_login_and_logout_forms_need_csrf(member):
    user, _ = member
    html = Client().get("/accounts/login/").content.decode()
    _assert_post_forms_have_csrf(html)
    strict = Client(enforce_csrf_checks=True)
    r = strict.post("/accounts/login/", {"username": "maint", "password": PASSWORD})
    assert r.status_code == 403
    strict.force_login(user)
    assert strict.post("/accounts/logout/").status_code == 403
    assert (
        strict.post("/admin/login/", {"username": "maint", "password": PASSWORD}).status_code == 403
    )


def _assert_post_forms_have_csrf(html: str) -> None:
    forms = re.findall(r"<form\b[^>]*>.*?</form>", html, re.S | re.I)
    posts = [f for f in forms if re.search(r'method=["\']?post', f, re.I)]
    for form in posts:
        assert 'name="csrfmiddlewaretoken"' in form, form[:200]


def test_session_and_csrf_cookies_are_secure_and_httponly(member):
    client = Client()
    client.get("/accounts/login/")
    r = client.post("/accounts/login/", {"username": "maint", "password": PASSWORD})
    assert r.status_code == 302
    session = r.cookies[settings.SESSION_COOKIE_NAME]
    assert session["secure"] and session["httponly"]
    assert session["samesite"] == "Lax"
    assert client.cookies[settings.CSRF_COOKIE_NAME]["secure"]


# --- logins: rate limits and enumeration ---------------------------------------------------------


def _login(client, url, username, password="wrong-password-1", ip="203.0.113.9"):  # noqa: S107
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=ip)


# The dashboard login's limits are tested in tests/dashboard/test_login.py; the admin's wrapper
# reads its rates at request time, so these tests can use small ones.


@pytest.fixture
def still_clock(monkeypatch):
    # A counter's window ends at a fixed second of every period for its key (django-ratelimit's
    # per-key offset): a test whose requests straddle that second sees its count start again.
    # The limiter's clock stands still, so every attempt lands in one window.
    return LimiterClock(monkeypatch, timezone.now())


def test_the_admin_login_is_limited_per_ip_across_usernames(db, settings, still_clock):
    settings.LOGIN_RATE_PER_IP = "4/10m"
    client = Client()
    for i in range(4):
        assert _login(client, "/admin/login/", f"user{i}").status_code == 200
    r = _login(client, "/admin/login/", "someone")
    assert (r.status_code, r["Retry-After"]) == (429, "600")
    assert _login(client, "/admin/login/", "someone", ip="203.0.113.10").status_code == 200


def test_the_admin_login_is_limited_per_username_even_with_the_right_password(
    db, settings, still_clock
):
    settings.LOGIN_RATE_PER_USER = "3/10m"
    get_user_model().objects.create_user(
        "admin1", password=PASSWORD, is_staff=True, is_superuser=True
    )
    client = Client()
    for i in range(3):
        assert _login(client, "/admin/login/", "admin1", ip=f"198.51.100.{i}").status_code == 200
    r = _login(client, "/admin/login/", "admin1", PASSWORD, ip="198.51.100.250")
    assert r.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another account is not locked by admin1's attempts.
    get_user_model().objects.create_user("admin2", password=PASSWORD, is_staff=True)
    assert (
        _login(client, "/admin/login/", "admin2", PASSWORD, ip="198.51.100.251").status_code == 302
    )


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_unknown_user_and_wrong_password_get_the_same_answer(url):
    get_user_model().objects.create_user("admin1", password=PASSWORD, is_staff=True)
    a = _login(Client(), url, "admin1", ip="192.0.2.1")
    b = _login(Client(), url, "nobody-here", ip="192.0.2.2")
    assert a.status_code == b.status_code == 200

    def normal(r, name):
        text = re.sub(r'value="[A-Za-z0-9]{32,}"', "", r.content.decode())
        return text.replace(name, "NAME")

    assert normal(a, "admin1") == normal(b, "nobody-here")


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ingest_keys_and_operator_tokens_are_stored_only_as_hashes():
    p = make_project()
    row = IngestKey.objects.get(project=p.project)
    assert row.key_hash == hashlib.sha256(p.ingest_key.encode()).hexdigest()
    assert row.prefix == p.ingest_key[:10] and len(row.prefix) < len(p.ingest_key) // 4
    project = Project.objects.get(pk=p.project.pk)
    assert project.operator_token_hash == hashlib.sha256(p.operator_token.encode()).hexdigest()
    dump = _dump_database()
    assert p.ingest_key not in dump and p.operator_token not in dump
    assert p.ingest_key[10:20] not in dump and p.operator_token[5:20] not in dump


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("contract", "path"),
    [
        ("domscribe", "v1/wau/2026-W47"),
        ("baofeng", "recent"),
        ("pryx", "api/telemetry/query"),
        ("native", None),  # the analytics API
    ],
)
def test_operator_tokens_are_compared_in_constant_time(monkeypatch, client, contract, path):
    p = make_project(contract=contract)
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    url = f"/p/{p.project.slug}/{path}" if path else f"/api/v1/projects/{p.project.slug}/active"
    r = client.get(url, HTTP_AUTHORIZATION=f"Bearer {p.operator_token}")
    assert r.status_code == 200
    assert calls, "the token was compared without hmac.compare_digest"


# --- one maintainer, another's project -----------------------------------------------------------

MARKER = "zz-foreign-secret-7f3a"
# Per contract, the front-door reads and writes a foreign credential must not get through.
FOREIGN_DOOR_ROUTES = {
    "native": [("POST", "api/v1/events")],
    "domscribe": [("GET", "v1/wau/{week}")],
    "baofeng": [("GET", "recent")],
    "pryx": [
        ("GET", "api/telemetry/query"),
        ("GET", "api/telemetry/batch/b-0001"),
        ("POST", "api/telemetry/ingest"),
    ],
    "axiom": [("POST", "v1/datasets/events/ingest")],
}


def slug_patterns(resolver=None, prefix="") -> list[str]:
    """Every URL pattern (as a route string) that takes a project slug."""
    out = []
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            out += slug_patterns(entry, route)
        elif isinstance(entry, URLPattern) and "<slug:slug>" in route:
            out.append(route)
    return out


@pytest.fixture
def foreign(member):
    """A project of each contract the member does not belong to, with data carrying MARKER."""
    projects = {}
    for contract in ["native", "voicemode", "domscribe", "baofeng", "pryx", "axiom"]:
        p = make_project(contract=contract, name=f"{MARKER} {contract}")
        Event.objects.create(
            project=p.project,
            install_id=f"inst_{MARKER}"[:64],
            name="flash_error" if contract == "baofeng" else "app.start",
            timestamp=timezone.now(),
            received_at=timezone.now(),
            properties={"secret": MARKER},
        )
        projects[contract] = p
    return projects


def test_every_slug_url_is_covered_by_the_foreign_project_test():
    assert sorted(slug_patterns()) == sorted(
        [
            "api/v1/projects/<slug:slug>/active",
            "api/v1/projects/<slug:slug>/retention",
            "api/v1/projects/<slug:slug>/breakdown",
            "p/<slug:slug>/<anypath:path>",
            "p/<slug:slug>/",
            "dashboard/<slug:slug>/",
            "dashboard/<slug:slug>/retention/",
            "dashboard/<slug:slug>/breakdown/",
            "dashboard/<slug:slug>/errors/",
            "dashboard/<slug:slug>/events/",
            "dashboard/<slug:slug>/events/export.<str:fmt>",
            "dashboard/<slug:slug>/setup/",
            "dashboard/<slug:slug>/setup/keys/",
            "dashboard/<slug:slug>/setup/keys/<int:key_id>/revoke/",
            "public/<slug:slug>/",
        ]
    ), "a new URL takes a project slug: add it to the foreign-project test below"


def test_a_maintainer_cannot_read_another_project_through_any_url(member, foreign):
    user, own = member
    session = logged_in(user)
    week = "{}-W{:02d}".format(*timezone.now().isocalendar()[:2])
    checked = 0
    for contract, p in foreign.items():
        slug = p.project.slug
        pages = [
            f"/dashboard/{slug}/",
            f"/dashboard/{slug}/retention/",
            f"/dashboard/{slug}/breakdown/?property=secret",
            f"/dashboard/{slug}/errors/",
            f"/dashboard/{slug}/events/",
            f"/dashboard/{slug}/events/export.csv",
            f"/dashboard/{slug}/events/export.ndjson",
            f"/dashboard/{slug}/setup/",
            f"/public/{slug}/",
        ]
        for url in pages:
            r = session.get(url)
            assert r.status_code in (403, 404), (url, r.status_code)
            _assert_nothing_leaked(r, url)
            checked += 1
        key_id = p.project.ingest_keys.get().pk
        for url in (
            f"/dashboard/{slug}/setup/keys/",
            f"/dashboard/{slug}/setup/keys/{key_id}/revoke/",
        ):
            for method in (session.get, session.post):
                r = method(url)
                assert r.status_code == 404, (url, r.status_code)
                _assert_nothing_leaked(r, url)
                checked += 1
        assert p.project.ingest_keys.filter(revoked_at__isnull=True).count() == 1
        for metric in ("active", "retention", "breakdown?property=secret"):
            url = f"/api/v1/projects/{slug}/{metric}"
            for client, headers in (
                (session, {}),
                (Client(), {"HTTP_AUTHORIZATION": f"Bearer {own.operator_token}"}),
                (Client(), {"HTTP_AUTHORIZATION": f"Bearer {own.ingest_key}"}),
                (Client(), {}),
            ):
                r = client.get(url, **headers)
                assert r.status_code in (401, 403, 404), (url, headers, r.status_code)
                _assert_nothing_leaked(r, url)
                checked += 1
        for method, path in FOREIGN_DOOR_ROUTES.get(contract, []):
            url = f"/p/{slug}/{path.format(week=week)}"
            for credential in (own.ingest_key, own.operator_token):
                body = json.dumps(native_event()) if method == "POST" else None
                r = Client().generic(
                    method,
                    url,
                    data=body or "",
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {credential}",
                    QUERY_STRING=f"token={credential}",
                )
                assert r.status_code in (401, 403), (url, r.status_code, r.content)
                _assert_nothing_leaked(r, url)
                checked += 1
    assert checked >= 160  # 6 projects x 25 dashboard and API requests, plus 14 door requests
    # The member's own project is readable, so the refusals above are about ownership.
    assert session.get(f"/dashboard/{own.project.slug}/").status_code == 200


def _assert_nothing_leaked(response, url: str) -> None:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert MARKER.encode() not in body, url
