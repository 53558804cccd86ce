"""Browser tests: Playwright drives Debian's chromium (never a downloaded browser) against
pytest-django's live server.

Screenshots go to $SCREENSHOT_DIR, by default var/artifacts/screenshots/ (CI keeps them
as artifacts). The tests are skipped, saying why, when no chromium binary is installed.
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOT_DIR = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var" / "artifacts" / "screenshots"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def pytest_collection_modifyitems(items):
    if shutil.which(CHROMIUM) or Path(CHROMIUM).is_file():
        return
    skip = pytest.mark.skip(
        reason=f"no chromium at {CHROMIUM} (apt install chromium, or set CHROMIUM_PATH)"
    )
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def chromium():
    """One chromium for the session. Playwright gives each launch a fresh temporary
    profile (it refuses a --user-data-dir argument), so nothing leaks between runs."""
    # Playwright's sync API runs an event loop in this thread; the tests' own ORM calls
    # are still synchronous, so Django's async-safety check would refuse them.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """A page in its own browser context, with the console errors it logged (the CSP
    reports a blocked inline script or style there)."""

    def __init__(self, context, base_url: str):
        self.context = context
        self.base_url = base_url
        self.page = context.new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on(
            "console", lambda m: self.errors.append(m.text) if m.type == "error" else None
        )

    def goto(self, path: str):
        return self.page.goto(self.base_url + path)

    def log_in(self, user) -> None:
        self.goto("/login/")
        self.page.fill("input[name=username]", user.email)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_load_state()

    def load_lazy_images(self) -> None:
        """Scroll through the page so that loading=lazy images below the fold load."""
        for image in self.page.locator("img[loading=lazy]").all():
            image.scroll_into_view_if_needed()
        self.page.wait_for_load_state("networkidle")
        self.page.evaluate("window.scrollTo(0, 0)")

    def screenshot(self, name: str) -> Path:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def tab(chromium, live_server):
    """tab(viewport=DESKTOP, color_scheme="light"): a new page on the live server."""
    contexts = []

    def open_tab(viewport=DESKTOP, color_scheme="light"):
        context = chromium.new_context(viewport=viewport, color_scheme=color_scheme)
        contexts.append(context)
        return Tab(context, live_server.url)

    yield open_tab
    for context in contexts:
        context.close()
