"""A real Chromium: staff log in to the admin, create a project, copy the ingest key shown once,
send an event with it through the native API and find it on the project's dashboard."""

import json
import re
import uuid
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from telemetry.models import Event, Project
from tests.dashboard.test_browser import ARGS, CHROMIUM


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_staff_create_a_project_in_the_admin_and_its_first_event_shows(
    live_server, settings, monkeypatch
):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")  # ORM checks below run in this thread
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_user_model().objects.create_superuser("root", "root@example.test", "pw-123456789")
    url = live_server.url

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(f"{url}/admin/login/")
        page.fill("#id_username", "root")
        page.fill("#id_password", "pw-123456789")
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r".*/admin/$"))

        page.goto(f"{url}/admin/telemetry/project/add/")
        page.fill("#id_slug", "web-made")
        page.fill("#id_name", "Made on the web")
        page.select_option("#id_contract", "native")
        page.click("input[name=_save]")
        page.wait_for_url(re.compile(r".*/admin/telemetry/project/secrets/$"))
        key = page.text_content('code.secret[data-kind="ingest-key"]').strip()
        assert key.startswith("tk_")
        assert "/p/web-made/api/v1/events" in page.text_content(".one-setting-lines")
        shots = Path(settings.DATA_DIR) / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "admin-secrets.png"), full_page=True)
        change_url = page.get_attribute("#secrets td a", "href")
        page.reload()
        assert page.query_selector("code.secret") is None  # shown once
        assert key not in page.content()

        # A client of its own: no cookies, only the key.
        api = pw.request.new_context()
        event = {
            "install_id": "inst_browser01",
            "name": "app.start",
            "timestamp": timezone.now().isoformat(),
            "event_id": f"evt_{uuid.uuid4().hex}",
        }
        sent = api.post(
            f"{url}/p/web-made/api/v1/events",
            data=json.dumps(event),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        assert sent.status == 202, sent.text()
        assert sent.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
        api.dispose()

        page.goto(f"{url}/dashboard/web-made/")
        assert page.text_content("#card-events").strip() == "1"
        assert page.text_content("#card-dau").strip() == "1"
        page.click("text=Setup")
        page.wait_for_url(re.compile(r".*/dashboard/web-made/setup/$"))
        row = page.text_content("#keys")
        assert key[:10] in row and "never" not in row  # last used: just now
        page.screenshot(path=str(shots / "setup.png"), full_page=True)
        # No ORM in here: Playwright's greenlet would open a database connection of its own
        # that nothing closes.
        page.goto(f"{url}{change_url}")
        assert "Issue a new ingest key" in page.content()
        page.screenshot(path=str(shots / "admin-project.png"), full_page=True)
        browser.close()

    project = Project.objects.get(slug="web-made")
    assert Event.objects.filter(project=project, install_id="inst_browser01").count() == 1
