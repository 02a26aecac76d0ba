"""The dashboard's Setup page: a member sees the one setting and the ingest keys (prefix,
created, last used), and issues or revokes keys only when the project allows it; the operator
token never appears."""

import json
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client

from telemetry.ingest import auth
from telemetry.models import IngestKey
from tests.factories import make_project, native_event

pytestmark = pytest.mark.django_db
SECRET_RE = re.compile(r'<code class="secret" data-kind="ingest-key">([^<]+)</code>')


@pytest.fixture
def member(client):
    user = get_user_model().objects.create_user("maint", password="pw-123456789")
    client.force_login(user)
    return user


def own_project(member, *, rotate: bool, **kwargs):
    p = make_project(**kwargs)
    p.project.members.add(member)
    if rotate:
        p.project.members_can_rotate_keys = True
        p.project.save()
    return p


def test_a_member_sees_the_key_prefix_its_age_and_last_use_but_no_secret(client, member):
    p = own_project(member, rotate=False, slug="mine")
    key = IngestKey.objects.get(project=p.project)
    html = client.get("/dashboard/mine/setup/").content.decode()
    assert f"<code>{key.prefix}…</code>" in html
    assert key.created_at.strftime("%Y-%m-%d %H:%M") in html
    assert "never" in html
    sent = Client().post(
        "/api/v1/events",
        json.dumps(native_event()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}",
    )
    assert sent.status_code == 202
    key.refresh_from_db()
    html = client.get("/dashboard/mine/setup/").content.decode()
    assert key.last_used_at.strftime("%Y-%m-%d %H:%M") in html
    for secret in (p.ingest_key, p.operator_token, p.project.operator_token_hash, key.key_hash):
        assert secret not in html
    assert "curl -X POST http://testserver/p/mine/api/v1/events" in html


def test_without_the_projects_consent_a_member_cannot_issue_or_revoke(client, member):
    p = own_project(member, rotate=False, slug="locked")
    key = IngestKey.objects.get(project=p.project)
    html = client.get("/dashboard/locked/setup/").content.decode()
    assert 'id="rotation-off"' in html and 'id="issue-key"' not in html and "Revoke" not in html
    assert client.post("/dashboard/locked/setup/keys/").status_code == 403
    assert client.post(f"/dashboard/locked/setup/keys/{key.pk}/revoke/").status_code == 403
    assert IngestKey.objects.filter(project=p.project).count() == 1
    assert auth.project_for_key(p.ingest_key) == p.project


def test_a_member_rotates_a_key_issue_then_revoke(client, member):
    p = own_project(member, rotate=True, slug="rot")
    old = IngestKey.objects.get(project=p.project)
    # The only live key cannot be revoked: clients would be cut off with nothing to move to.
    r = client.post(f"/dashboard/rot/setup/keys/{old.pk}/revoke/", follow=True)
    assert "only live key" in r.content.decode()
    assert auth.project_for_key(p.ingest_key) == p.project

    assert client.get("/dashboard/rot/setup/keys/").status_code == 405
    r = client.post("/dashboard/rot/setup/keys/")
    assert r.status_code == 302 and r["Location"] == "/dashboard/rot/setup/"
    (new,) = SECRET_RE.findall(client.get("/dashboard/rot/setup/").content.decode())
    assert new not in client.get("/dashboard/rot/setup/").content.decode()  # shown once
    assert auth.project_for_key(new) == p.project
    assert auth.project_for_key(p.ingest_key) == p.project  # the old one still works

    r = client.post(f"/dashboard/rot/setup/keys/{old.pk}/revoke/", follow=True)
    assert f"Ingest key {old.prefix}… is revoked." in r.content.decode()
    assert auth.project_for_key(p.ingest_key) is None
    assert auth.project_for_key(new) == p.project
    history = list(LogEntry.objects.order_by("pk").values_list("user__username", "change_message"))
    assert history == [
        ("maint", f"Issued ingest key {new[:10]}… (dashboard)."),
        ("maint", f"Revoked ingest key {old.prefix}… (dashboard)."),
    ]


def test_a_key_of_another_project_cannot_be_revoked_through_mine(client, member):
    own_project(member, rotate=True, slug="mine")
    other = make_project(slug="other")
    key = other.project.ingest_keys.get()
    client.post(f"/dashboard/mine/setup/keys/{key.pk}/revoke/")
    assert auth.project_for_key(other.ingest_key) == other.project


def test_the_operator_token_is_never_offered_to_members(client, member):
    own_project(member, rotate=True, slug="tok")
    html = client.get("/dashboard/tok/setup/").content.decode()
    assert "operator-token" not in html and "Rotate the operator token" not in html
