"""Browser tests: Playwright drives Debian's chromium (never a downloaded browser) against
pytest-django's live server.

Screenshots go to $SCREENSHOT_DIR, by default var/artifacts/screenshots/ (CI keeps them
as artifacts). The tests are skipped, saying why, when no chromium binary is installed.
"""

import os
import shutil
from pathlib import Path

import pytest
from django.utils import timezone

from generator.images import store_generated_image
from generator.models import Attempt, GenerationRequest, QuotaState, Status
from tests.conftest import PASSWORD
from tests.media import picture

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
DESKTOP = {"width": 1366, "height": 900}


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
    """tab(viewport=DESKTOP, color_scheme="light", javascript=True): a new page on the
    live server."""
    contexts = []

    def open_tab(viewport=DESKTOP, color_scheme="light", javascript=True):
        context = chromium.new_context(
            viewport=viewport, color_scheme=color_scheme, java_script_enabled=javascript
        )
        contexts.append(context)
        return Tab(context, live_server.url)

    yield open_tab
    for context in contexts:
        context.close()


@pytest.fixture
def images(alice, bob, team, settings, tmp_path):
    """A small team gallery: delivered images in several ratios, one fell back, one queued."""
    settings.MEDIA_ROOT = tmp_path / "media"
    rows = []
    for n, (ratio, size, user, model, fell_back) in enumerate(
        [
            ("1:1", (512, 512), alice, "gemini-3-pro-image-preview", False),
            ("16:9", (640, 360), bob, "gemini-2.5-flash-image", True),
            ("3:4", (384, 512), alice, "gemini-3-pro-image-preview", False),
            ("9:16", (288, 512), bob, "gemini-3-pro-image-preview", False),
        ]
    ):
        row = GenerationRequest.objects.create(
            user=user,
            team=team,
            prompt=f"Picture {n}: a lighthouse at dusk, watercolour, ratio {ratio}",
            strategy="quality-first",
            aspect_ratio=ratio,
            chain=["gemini-3-pro-image-preview", "gemini-2.5-flash-image"],
            status=Status.SUCCEEDED,
            served_model=model,
            fell_back=fell_back,
            fallback_reason="Nano Banana Pro was unavailable (503)." if fell_back else "",
            delivered_width=size[0],
            delivered_height=size[1],
            attempt_count=2 if fell_back else 1,
            cost_usd="0.134",
            finished=timezone.now(),
            quota_state=QuotaState.CHARGED,
        )
        store_generated_image(row, picture("PNG", size))
        if fell_back:
            Attempt.objects.create(
                request=row,
                number=1,
                model="gemini-3-pro-image-preview",
                provider="gemini",
                outcome="unavailable",
                http_status=503,
                latency_ms=840,
                decision="downgrade",
                decision_reason="Nano Banana Pro is unavailable; falling back to Nano Banana.",
                next_model="gemini-2.5-flash-image",
            )
        Attempt.objects.create(
            request=row,
            number=2 if fell_back else 1,
            model=model,
            provider="gemini",
            outcome="success",
            http_status=200,
            latency_ms=9300,
            decision="done",
            decision_reason="Delivered",
        )
        rows.append(row)
    GenerationRequest.objects.create(
        user=alice,
        team=team,
        prompt="A queued fox in the snow",
        strategy="quality-first",
        aspect_ratio="4:3",
        chain=["gemini-3-pro-image-preview"],
        status=Status.QUEUED,
        current_model="gemini-3-pro-image-preview",
    )
    return rows


# What a page must not do at any width: be wider than the screen, or hide table
# columns behind a sideways scroll.
OVERFLOW_JS = """() => {
  const view = document.documentElement.clientWidth;
  const wide = [];
  for (const el of document.querySelectorAll("body *")) {
    const box = el.getBoundingClientRect();
    if (box.width && box.right > view + 1) wide.push(el.tagName.toLowerCase() + "." + el.className);
  }
  const hidden = [];
  for (const el of document.querySelectorAll(".table-wrap, table")) {
    if (el.scrollWidth > el.clientWidth + 1) hidden.push(el.id || el.className || el.tagName);
  }
  return {scroll: document.documentElement.scrollWidth, view, wide: wide.slice(0, 8), hidden};
}"""


def assert_fits(tab: Tab, name: str) -> None:
    """The page fits its viewport: no sideways scroll of the page, and no table whose
    columns hide behind a scroll of its own."""
    found = tab.page.evaluate(OVERFLOW_JS)
    assert found["scroll"] <= found["view"], f"{name}: {found}"
    assert found["hidden"] == [], f"{name}: {found}"
