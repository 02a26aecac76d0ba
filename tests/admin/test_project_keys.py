"""The admin's self-service: create a project with its keys, issue, revoke and rotate them, see
each secret once, and the client's one setting."""

import hashlib
import io
import json
import logging
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.forms.models import model_to_dict
from django.test import Client

from telemetry.ingest import auth
from telemetry.models import Contract, IngestKey, Project
from tests.factories import make_project, native_event

SECRET_RE = re.compile(r'<code class="secret" data-project="([^"]+)" data-kind="([^"]+)">([^<]+)<')
ADD_URL = "/admin/telemetry/project/add/"
SECRETS_URL = "/admin/telemetry/project/secrets/"


@pytest.fixture
def staff(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = get_user_model().objects.create_superuser("root", "root@example.test", "pw")
    client = Client()
    client.force_login(user)
    return client


def form_data(**overrides) -> dict:
    data = {
        "slug": "adm-tool",
        "name": "",
        "contract": "native",
        "hostnames": "",
        "allowed_origins": "",
        "retention_days": "",
        "install_rate": "",
        "ip_rate": "",
        "property_schema": "{}",
        "public_min_installs": "5",
        "ingest_keys-TOTAL_FORMS": "0",
        "ingest_keys-INITIAL_FORMS": "0",
        "ingest_keys-MIN_NUM_FORMS": "0",
        "ingest_keys-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def shown_secrets(html: str) -> dict:
    return {(slug, kind): secret for slug, kind, secret in SECRET_RE.findall(html)}


def add_project(client, **overrides):
    r = client.post(ADD_URL, form_data(**overrides))
    assert r.status_code == 302, r.content.decode()[:3000]
    assert r["Location"] == SECRETS_URL
    page = client.get(SECRETS_URL)
    assert page.status_code == 200
    return shown_secrets(page.content.decode()), page


def comparable(project: Project) -> dict:
    row = model_to_dict(project, exclude=["id", "slug", "name", "members"])
    keys = list(IngestKey.objects.filter(project=project).values("prefix", "revoked_at"))
    return {
        **row,
        "operator_token_hash": len(project.operator_token_hash),
        "keys": [(k["prefix"][:3], len(k["prefix"]), k["revoked_at"]) for k in keys],
    }


@pytest.mark.parametrize("contract", Contract.values)
def test_adding_a_project_in_the_admin_leaves_the_same_rows_as_the_command(staff, contract):
    call_command(
        "create_project", "cmd-tool", "--contract", contract, "--hostname", "cmd.example.test",
        "--origin", "https://a.example.test", "--json", stdout=io.StringIO(),
    )  # fmt: skip
    add_project(
        staff,
        slug="adm-tool",
        contract=contract,
        hostnames="ADM.example.test",
        allowed_origins="https://a.example.test",
    )
    by_command = Project.objects.get(slug="cmd-tool")
    by_admin = Project.objects.get(slug="adm-tool")
    assert by_admin.name == "adm-tool"  # blank name is the slug, as with the command
    assert by_admin.hostnames == ["adm.example.test"]
    a, c = comparable(by_admin), comparable(by_command)
    assert a.pop("hostnames") == ["adm.example.test"] and c.pop("hostnames") == ["cmd.example.test"]
    assert a == c
    if contract == "pryx":
        assert by_admin.retention_days == 7


def test_the_new_secrets_are_shown_once_and_only_their_hashes_are_stored(staff):
    secrets, page = add_project(staff, slug="once")
    key, token = secrets[("once", "ingest-key")], secrets[("once", "operator-token")]
    project = Project.objects.get(slug="once")
    assert project.operator_token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert (
        IngestKey.objects.get(project=project).key_hash == hashlib.sha256(key.encode()).hexdigest()
    )
    assert "was added successfully" in page.content.decode()
    assert page["Cache-Control"].startswith("max-age=0") and "no-store" in page["Cache-Control"]
    again = staff.get(SECRETS_URL).content.decode()
    assert key not in again and token not in again and 'id="nothing"' in again
    # The key works at once on the native API.
    r = Client().post(
        "/api/v1/events",
        json.dumps(native_event()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert r.status_code == 202


def test_a_secret_is_never_in_a_url_a_log_line_the_history_or_the_session(staff, caplog):
    caplog.set_level(logging.DEBUG)
    r = staff.post(ADD_URL, form_data(slug="quiet"))
    urls = [r["Location"]]
    page = staff.get(r["Location"]).content.decode()
    project = Project.objects.get(slug="quiet")
    change = f"/admin/telemetry/project/{project.pk}/change/"
    for url in (
        f"/admin/telemetry/project/{project.pk}/keys/issue/",
        f"/admin/telemetry/project/{project.pk}/operator-token/rotate/",
    ):
        r = staff.post(url)
        urls.append(r["Location"])
        page += staff.get(r["Location"]).content.decode()
    secrets = [s for _, _, s in SECRET_RE.findall(page)]
    assert len(secrets) == 4
    history = staff.get(f"/admin/telemetry/project/{project.pk}/history/").content.decode()
    messages = list(LogEntry.objects.values_list("change_message", flat=True))
    sessions = [s.get_decoded() for s in Session.objects.all()]
    for secret in secrets:
        assert all(secret not in u for u in urls)
        assert secret not in caplog.text
        assert secret not in history and all(secret not in m for m in messages)
        assert secret not in json.dumps(sessions)
        assert secret not in staff.get(change).content.decode()
    assert "Issued ingest key tk_" in history and "Rotated the operator token." in history


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"slug": "taken"}, "exists already"),
        ({"slug": "My Tool"}, "Enter a valid"),
        ({"slug": "MyTool"}, "invalid slug"),
        ({"slug": "my_tool"}, "invalid slug"),
        ({"slug": "-tool"}, "invalid slug"),
        ({"hostnames": "telemetry.taken.test"}, "already served by project"),
        ({"hostnames": "http://x.test/path"}, "invalid hostname"),
        ({"hostnames": "testserver"}, "this admin&#x27;s own host"),
        ({"install_rate": "lots"}, "invalid rate"),
        ({"retention_days": "-1"}, "greater than or equal to 0"),
    ],
)
def test_bad_input_is_a_form_error_not_a_500(staff, overrides, error):
    make_project(slug="taken", hostnames=["telemetry.taken.test"])
    before = Project.objects.count()
    r = staff.post(ADD_URL, form_data(**{"slug": "new-tool", **overrides}))
    assert r.status_code == 200
    body = r.content.decode()
    assert "errorlist" in body and error in body, body[body.find("errorlist") - 300 :][:1500]
    assert Project.objects.count() == before
    assert not shown_secrets(staff.get(SECRETS_URL).content.decode())


def test_editing_a_project_cannot_take_another_projects_hostname(staff):
    make_project(slug="taken", hostnames=["telemetry.taken.test"])
    mine = make_project(slug="mine").project
    data = form_data(slug="mine", name="Mine", retention_days="90", install_rate="10/h")
    data.update(ip_rate="100/h", hostnames="telemetry.taken.test")
    data.update({"ingest_keys-TOTAL_FORMS": "1", "ingest_keys-INITIAL_FORMS": "1"})
    data["ingest_keys-0-id"] = str(mine.ingest_keys.get().pk)
    data["ingest_keys-0-project"] = str(mine.pk)
    r = staff.post(f"/admin/telemetry/project/{mine.pk}/change/", data)
    assert r.status_code == 200 and "already served by project" in r.content.decode()
    mine.refresh_from_db()
    assert mine.hostnames == []


def test_issuing_a_new_key_keeps_the_old_one_valid_until_it_is_revoked(staff):
    p = make_project(slug="rot")
    issue = f"/admin/telemetry/project/{p.project.pk}/keys/issue/"
    confirm = staff.get(issue)
    assert confirm.status_code == 200 and "stay valid" in confirm.content.decode()
    assert IngestKey.objects.filter(project=p.project).count() == 1  # GET changes nothing
    r = staff.post(issue)
    new = shown_secrets(staff.get(r["Location"]).content.decode())[("rot", "ingest-key")]
    assert auth.project_for_key(p.ingest_key) == p.project
    assert auth.project_for_key(new) == p.project

    old = IngestKey.objects.get(key_hash=auth.hash_secret(p.ingest_key))
    revoke = f"/admin/telemetry/project/{p.project.pk}/keys/{old.pk}/revoke/"
    assert revoke in staff.get(f"/admin/telemetry/project/{p.project.pk}/change/").content.decode()
    assert staff.get(revoke).status_code == 200
    r = staff.post(revoke, follow=True)
    assert f"Ingest key {old.prefix}… is revoked." in r.content.decode()
    assert auth.project_for_key(p.ingest_key) is None
    assert auth.project_for_key(new) == p.project
    sent = Client().post(
        "/api/v1/events",
        json.dumps(native_event()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {p.ingest_key}",
    )
    assert sent.status_code == 403
    assert LogEntry.objects.filter(change_message=f"Revoked ingest key {old.prefix}….").exists()


def test_rotating_the_operator_token_retires_the_old_one(staff):
    p = make_project(slug="tok")
    r = staff.post(f"/admin/telemetry/project/{p.project.pk}/operator-token/rotate/")
    token = shown_secrets(staff.get(r["Location"]).content.decode())[("tok", "operator-token")]
    p.project.refresh_from_db()
    assert auth.operator_token_matches(p.project, token)
    assert not auth.operator_token_matches(p.project, p.operator_token)
    api = "/api/v1/projects/tok/active"
    assert Client().get(api, HTTP_AUTHORIZATION=f"Bearer {p.operator_token}").status_code == 401
    assert Client().get(api, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_the_changelist_actions_show_every_new_secret_once(staff):
    a, b = make_project(slug="bulk-a"), make_project(slug="bulk-b")
    ids = [str(a.project.pk), str(b.project.pk)]
    r = staff.post(
        "/admin/telemetry/project/",
        {"action": "issue_ingest_keys", "_selected_action": ids},
    )
    assert r.status_code == 302 and r["Location"] == SECRETS_URL
    r = staff.post(
        "/admin/telemetry/project/",
        {"action": "rotate_operator_tokens", "_selected_action": ids},
    )
    shown = shown_secrets(staff.get(SECRETS_URL).content.decode())
    assert set(shown) == {
        ("bulk-a", "ingest-key"),
        ("bulk-b", "ingest-key"),
        ("bulk-a", "operator-token"),
        ("bulk-b", "operator-token"),
    }
    assert auth.project_for_key(shown[("bulk-b", "ingest-key")]) == b.project
    assert auth.project_for_key(a.ingest_key) == a.project  # old keys stay valid


def test_the_key_list_revokes_in_bulk(staff):
    p = make_project(slug="keys")
    key = p.project.ingest_keys.get()
    r = staff.post(
        "/admin/telemetry/ingestkey/",
        {"action": "revoke_keys", "_selected_action": [str(key.pk)]},
        follow=True,
    )
    assert "Revoked 1 ingest key(s)." in r.content.decode()
    assert auth.project_for_key(p.ingest_key) is None
    assert LogEntry.objects.get().get_change_message() == f"Revoked ingest key {key.prefix}…."


def test_staff_without_change_permission_cannot_issue_keys(db):
    p = make_project(slug="locked")
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)
    for url in (
        f"/admin/telemetry/project/{p.project.pk}/keys/issue/",
        f"/admin/telemetry/project/{p.project.pk}/operator-token/rotate/",
    ):
        assert client.post(url).status_code == 403
    assert p.project.ingest_keys.count() == 1


@pytest.mark.parametrize(
    ("contract", "expected"),
    [
        ("voicemode", "VOICEMODE_TELEMETRY_ENDPOINT http://testserver/p/one/telemetry"),
        ("domscribe", "http://testserver/p/one/v1/session"),
        ("baofeng", "VITE_TELEMETRY_BASE_URL=http://testserver/p/one"),
        ("pryx", "PRYX_CLOUD_API_URL=http://testserver/p/one/api"),
        ("axiom", "http://testserver/p/one/v1/datasets/wm_api_usage/ingest"),
        ("native", "curl -X POST http://testserver/p/one/api/v1/events"),
    ],
)
def test_the_change_page_shows_the_clients_one_setting(staff, contract, expected):
    p = make_project(slug="one", contract=contract)
    body = staff.get(f"/admin/telemetry/project/{p.project.pk}/change/").content.decode()
    assert expected in body


def test_the_one_setting_uses_the_hostname_and_the_public_url(staff, settings):
    settings.TELEMETRY_PUBLIC_URL = "https://telemetry.example.org/"
    p = make_project(slug="vm", contract="voicemode", hostnames=["vm.example.org"])
    body = staff.get(f"/admin/telemetry/project/{p.project.pk}/change/").content.decode()
    assert "VOICEMODE_TELEMETRY_ENDPOINT https://vm.example.org/telemetry" in body
    assert "<code>https://telemetry.example.org/p/vm</code>" in body


def test_the_admin_pages_render(staff):
    p = make_project(slug="pages")
    key = p.project.ingest_keys.get()
    staff.post(f"/admin/telemetry/project/{p.project.pk}/keys/{key.pk}/revoke/")
    for url in (
        ADD_URL,
        "/admin/telemetry/project/",
        f"/admin/telemetry/project/{p.project.pk}/change/",
        "/admin/telemetry/ingestkey/",
        "/admin/telemetry/ingestkey/?revoked_at__isnull=True",
        f"/admin/telemetry/ingestkey/{key.pk}/change/",
    ):
        assert staff.get(url).status_code == 200, url
    assert staff.get("/admin/telemetry/project/999999/keys/issue/").status_code == 404
