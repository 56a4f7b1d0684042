"""The dashboard at / in real headless Chromium (Debian's package, driven by Playwright):
live groups, queue positions, cancel / retry / delete buttons, behind the bearer token."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.service import base_config, run_service, wait_for

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "dashboard-token-0123456789"


@pytest.fixture
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is needed at {CHROMIUM} (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15000)
            yield page
        finally:
            browser.close()


def test_dashboard_lives_and_acts(tmp_path, browser_page):
    page = browser_page
    cfg = base_config(
        tmp_path,
        server={"auth_token": TOKEN},
        polling={"max_active_jobs": 1, "interval_s": 0.4},
        providers={"demo": {"polls_until_done": 5}},
    )
    with (
        run_service(cfg) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client,
    ):
        ids = [
            client.post(
                "/poll-video", json={"sessionId": f"user-{i}", "taskId": f"d-{i}", "model": "demo"}
            ).json()["jobId"]
            for i in range(3)
        ]
        page.goto(url + "/")
        page.wait_for_selector("#live.off")  # no token yet: the stream is refused
        assert "token needed" in page.inner_text("#live")
        page.fill("#token", TOKEN)
        page.click("#save-token")
        page.wait_for_selector("#live.on")

        processing = page.locator("#processing tbody tr")
        queued = page.locator("#queued tbody tr")
        wait_for(lambda: processing.count() == 1 and queued.count() == 2, timeout=15)
        assert page.locator(f'#processing tr[data-job="{ids[0]}"]').count() == 1
        assert "#1 in queue" in page.inner_text(f'#queued tr[data-job="{ids[1]}"]')
        assert "#2 in queue" in page.inner_text(f'#queued tr[data-job="{ids[2]}"]')

        # cancel a queued job from the page: it moves to History without a reload
        page.click(f'#queued tr[data-job="{ids[2]}"] button[data-act="cancel"]')
        page.wait_for_selector(f'#history tr[data-job="{ids[2]}"][data-status="cancelled"]')
        assert client.get(f"/jobs/{ids[2]}").json()["status"] == "cancelled"

        # a job posted elsewhere shows up live
        new = client.post(
            "/poll-video", json={"sessionId": "late", "taskId": "d-late", "model": "demo"}
        ).json()["jobId"]
        page.wait_for_selector(f'#queued tr[data-job="{new}"]')

        # the first job finishes: History, newest first, with a Download button
        page.wait_for_selector(
            f'#history tr[data-job="{ids[0]}"][data-status="succeeded"]', timeout=30000
        )
        assert (
            page.locator(f'#history tr[data-job="{ids[0]}"] button[data-act="download"]').count()
            == 1
        )
        first_history = page.locator("#history tbody tr").first.get_attribute("data-job")
        assert first_history == ids[0], "newest finished first"

        # retry the cancelled job, then delete it (confirm dialog accepted)
        page.click(f'#history tr[data-job="{ids[2]}"] button[data-act="retry"]')
        page.wait_for_selector(f'#queued tr[data-job="{ids[2]}"]')
        page.on("dialog", lambda dialog: dialog.accept())
        page.click(f'#queued tr[data-job="{ids[2]}"] button[data-act="delete"]')
        page.wait_for_selector(f'tr[data-job="{ids[2]}"]', state="detached")
        assert client.get(f"/jobs/{ids[2]}").status_code == 404

        elapsed = page.inner_text(f'#history tr[data-job="{ids[0]}"] td.elapsed')
        assert elapsed.endswith("s")
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        target = os.environ.get("DASHBOARD_SCREENSHOT")
        if target:  # how docs/dashboard.png in the README is made
            shutil.copy(shot, target)


def test_dashboard_asks_for_the_token_and_shows_task_and_error_code(tmp_path, browser_page):
    """With a token set and none entered the page says what to do instead of looking empty;
    rows show the provider task id and a failed job's error code."""
    page = browser_page
    cfg = base_config(tmp_path, server={"auth_token": TOKEN})
    with (
        run_service(cfg) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client,
    ):
        failed = client.post(
            "/poll-video", json={"sessionId": "u", "taskId": "task-fail-7", "model": "demo"}
        ).json()["jobId"]
        page.goto(url + "/")
        page.wait_for_selector("#auth-prompt.show")
        prompt = page.inner_text("#auth-prompt")
        assert "token" in prompt and "server.auth_token" in prompt
        assert not page.locator("#history").is_visible(), "no empty lists behind the prompt"

        page.fill("#token", "not-the-token")
        page.click("#save-token")
        page.wait_for_function(
            "document.getElementById('auth-prompt').textContent.includes('refused')"
        )

        page.fill("#token", TOKEN)
        page.click("#save-token")
        page.wait_for_selector("#live.on")
        page.wait_for_selector("#auth-prompt", state="hidden")
        row = page.locator(f'#history tr[data-job="{failed}"][data-status="failed"]')
        row.wait_for()
        text = row.inner_text()
        assert "task-fail-7" in text and "unknown_provider_error" in text
        assert page.locator("#history th", has_text="Task").count() == 1
