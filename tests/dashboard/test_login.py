"""Login: Django's form, rate-limited per hashed IP and per username, same answer for all."""

import pytest
from django.contrib.auth import get_user_model

from telemetry.dashboard import security
from tests.cachekeys import LimiterSpy, cache_entries, leaks

pytestmark = pytest.mark.django_db


def login(client, username, password="wrong-password", ip="203.0.113.9"):  # noqa: S107
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def test_login_form_carries_a_csrf_token(client):
    html = client.get("/accounts/login/").content.decode()
    assert 'name="csrfmiddlewaretoken"' in html


def test_right_password_logs_in_and_lands_on_the_dashboard(client):
    get_user_model().objects.create_user("maint", password="pw-123456789")
    r = login(client, "maint", "pw-123456789")
    assert r.status_code == 302 and r["Location"] == "/dashboard/"


def test_unknown_and_known_usernames_fail_the_same_way(client):
    get_user_model().objects.create_user("maint", password="pw-123456789")
    a, b = login(client, "maint"), login(client, "nobody")
    assert a.status_code == b.status_code == 200
    assert "Please enter a correct username and password." in a.content.decode()
    assert a.content.decode().count("correct username") == b.content.decode().count(
        "correct username"
    )


def test_a_username_is_locked_after_its_attempts_even_from_many_ips(client, settings):
    get_user_model().objects.create_user("maint", password="pw-123456789")
    for i in range(10):
        assert login(client, "maint", ip=f"198.51.100.{i}").status_code == 200
    r = login(client, "maint", "pw-123456789", ip="198.51.100.200")
    assert r.status_code == 429
    assert "Too many login attempts" in r.content.decode()


def test_an_ip_is_locked_after_its_attempts_across_usernames(client):
    for i in range(20):
        assert login(client, f"user{i}").status_code == 200
    assert login(client, "someone-else").status_code == 429
    assert login(client, "someone-else", ip="203.0.113.10").status_code == 200


def test_rate_limit_keys_hold_no_raw_ip_or_username(client, monkeypatch):
    spy = LimiterSpy(monkeypatch)
    login(client, "maint", ip="203.0.113.77")
    admin_login(client, "maint", ip="203.0.113.77")
    assert len(cache_entries()) == 2  # one counter per IP and one per username, both forms
    assert len(spy.calls) == 4
    assert leaks(["203.0.113.77", "maint"], spy) == []


def test_the_login_key_check_catches_a_raw_username(client, monkeypatch):
    spy = LimiterSpy(monkeypatch)
    monkeypatch.setattr(security, "_digest", lambda kind, value: value)  # a leaky key function
    login(client, "maint", ip="203.0.113.77")
    assert sorted(leaks(["203.0.113.77", "maint"], spy)) == ["203.0.113.77", "maint"]


def admin_login(client, username, password="wrong-password", ip="203.0.113.9"):  # noqa: S107
    return client.post(
        "/admin/login/", {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def test_the_admin_and_dashboard_logins_share_one_budget_per_username(client):
    get_user_model().objects.create_user("maint", password="pw-123456789", is_staff=True)
    for i in range(5):
        assert admin_login(client, "maint", ip=f"198.51.100.{i}").status_code == 200
        assert login(client, "maint", ip=f"198.51.100.{i + 100}").status_code == 200
    assert login(client, "maint", "pw-123456789", ip="198.51.100.200").status_code == 429
    assert admin_login(client, "maint", "pw-123456789", ip="198.51.100.201").status_code == 429


def test_the_admin_and_dashboard_logins_share_one_budget_per_ip(client):
    for i in range(10):
        assert admin_login(client, f"admin{i}").status_code == 200
        assert login(client, f"user{i}").status_code == 200
    assert login(client, "someone-else").status_code == 429
    assert admin_login(client, "someone-else").status_code == 429
