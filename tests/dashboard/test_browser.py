"""A real Chromium logs in and reads the overview, retention, breakdown, errors and events
pages; the numbers it sees must be the API's, and wide grids scroll inside their card."""

import datetime as dt
import os
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from telemetry.services.demo import seed_demo
from tests.factories import make_project

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_dashboard_in_chromium_shows_the_apis_numbers(live_server, settings, monkeypatch):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    # Playwright's sync API runs an event loop in this thread; Django's ORM calls here are
    # plain synchronous test code, not async handlers.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    p = make_project(slug="browser-demo")
    seed_demo(project=p.project, installs=120, events=3000, days=60, seed=2, now=timezone.now())
    user = get_user_model().objects.create_user("maint", password="pw-123456789")
    p.project.members.add(user)
    today = timezone.now().date()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{live_server.url}/dashboard/browser-demo/")
        assert "/accounts/login/" in page.url
        page.fill("#id_username", "maint")
        page.fill("#id_password", "pw-123456789")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/dashboard/browser-demo/$"))

        api = page.request.get(
            f"{live_server.url}/api/v1/projects/browser-demo/active",
            params={"interval": "day", "start": str(today), "end": str(today)},
        ).json()
        assert int(page.text_content("#card-dau")) == api["series"][0]["active_installs"]
        start = today - dt.timedelta(days=29)
        week_api = page.request.get(
            f"{live_server.url}/api/v1/projects/browser-demo/active",
            params={"interval": "week", "start": str(start), "end": str(today)},
        ).json()
        shown = page.eval_on_selector_all(
            "#weekly tr", "rows => rows.slice(1).map(r => [...r.cells].map(c => c.textContent))"
        )
        assert [[r[0], int(r[1]), int(r[2]), int(r[3])] for r in shown] == [
            [s["period"], s["active_installs"], s["new_installs"], s["events"]]
            for s in week_api["series"]
        ]
        page.wait_for_function("document.querySelectorAll('canvas').length >= 4")
        drawn = page.evaluate(
            "[...document.querySelectorAll('canvas[data-chart]')]"
            ".every(c => window.Chart && Chart.getChart(c))"
        )
        assert drawn, "every chart canvas got a Chart.js chart"
        shot_dir = Path(settings.DATA_DIR) / "screenshots"
        shot_dir.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot_dir / "overview.png"), full_page=True)

        page.click("text=Retention")
        page.wait_for_url(re.compile(r".*/retention/$"))
        grid = page.request.get(
            f"{live_server.url}/api/v1/projects/browser-demo/retention",
            params={"period": "week", "cohorts": "12"},
        ).json()
        for cohort in grid["cohorts"]:
            cells = page.eval_on_selector_all(
                f'#retention-week tr[data-cohort="{cohort["cohort"]}"] td.cell',
                "tds => tds.map(td => td.dataset.n)",
            )
            assert [int(n) for n in cells] == cohort["retained"]
            size = page.text_content(f'#retention-week tr[data-cohort="{cohort["cohort"]}"] .size')
            assert int(size) == cohort["size"]
        page.screenshot(path=str(shot_dir / "retention.png"), full_page=True)

        # The 30 x 30 daily grid scrolls inside its card; the page itself never gets wider.
        page.set_viewport_size({"width": 900, "height": 1200})
        layout = page.evaluate(
            """() => {
              const card = document.querySelector('#grid-day');
              const cohort = document.querySelector('#retention-day tr:nth-child(2) > th');
              card.scrollLeft = 400;
              return {
                page: document.documentElement.scrollWidth, window: window.innerWidth,
                inner: card.scrollWidth, outer: card.clientWidth, scrolled: card.scrollLeft,
                sticky: getComputedStyle(cohort).position,
                left: cohort.getBoundingClientRect().left - card.getBoundingClientRect().left,
              };
            }"""
        )
        assert layout["page"] <= layout["window"], layout
        assert layout["inner"] > layout["outer"] and layout["scrolled"] > 0, layout
        assert layout["sticky"] == "sticky" and abs(layout["left"]) <= 2, layout
        page.screenshot(path=str(shot_dir / "retention-narrow.png"), full_page=True)
        page.set_viewport_size({"width": 1400, "height": 1800})

        # The breakdown page opens on events by name over the range, equal to the daily counts.
        page.click("text=Breakdowns")
        page.wait_for_url(re.compile(r".*/breakdown/$"))
        shown = page.eval_on_selector_all(
            "#breakdown tr",
            "rows => rows.slice(1).map(r => [r.cells[0].textContent, r.cells[1].textContent])",
        )
        start = today - dt.timedelta(days=29)
        by_name = page.request.get(
            f"{live_server.url}/api/v1/projects/browser-demo/breakdown",
            params={"property": "name", "start": str(start), "end": str(today)},
        ).json()
        assert sorted((k, int(v)) for k, v in shown) == sorted(
            (r["key"], r["value"]) for r in by_name["rows"]
        )
        page.wait_for_function("document.querySelectorAll('canvas').length >= 1")
        page.screenshot(path=str(shot_dir / "breakdown.png"), full_page=True)

        # Errors and the events explorer render their rows.
        page.click("text=Errors")
        page.wait_for_url(re.compile(r".*/errors/$"))
        assert page.locator("h1").count() == 1
        page.screenshot(path=str(shot_dir / "errors.png"), full_page=True)
        page.click("text=Events")
        page.wait_for_url(re.compile(r".*/events/$"))
        assert page.locator("table tr").count() > 1
        page.screenshot(path=str(shot_dir / "events.png"), full_page=True)
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
    assert os.path.getsize(shot_dir / "overview.png") > 10_000
