"""The whole way in a browser: the live server, real RQ workers, Redis and the sandbox
upstream. A member signs in, submits, watches the request reach done without reloading,
sees which model served it, remixes, filters the gallery and deletes; under an outage of
the primary model the image arrives with the "fell back" badge."""

import pytest
from playwright.sync_api import expect

from generator.models import GenerationRequest, Status

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
DONE_WITHIN_MS = 60_000


@pytest.fixture
def pipeline(settings, tmp_path, sandbox_settings, monkeypatch):
    # Listed before `workers` in the tests' arguments: the workers start with these.
    settings.TIME_SCALE = 0.005
    # The request's time budget is scaled too (1200 s x 0.005 = 6 s): however long the
    # workers take to start on a busy machine, a request must not run out of time.
    monkeypatch.setenv("POLICY_REQUEST_BUDGET_S", "100000")
    settings.LEASE_SECONDS = 2
    settings.MEDIA_ROOT = tmp_path / "media"
    sandbox_settings.reset()
    return sandbox_settings


def submit_prompt(page, text: str, *, count: int = 1) -> None:
    page.fill("textarea[name=prompt]", text)
    page.fill("input[name=count]", str(count))
    page.get_by_role("button", name="Generate").click()


def test_it_takes_a_prompt_to_a_delivered_image_and_back(pipeline, workers, tab, alice):
    workers.start(2)
    t = tab()
    page = t.page
    t.log_in(alice)

    # Submit from the nav's "New image" and land on the request's page.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New image").click()
    submit_prompt(page, "A lighthouse at dusk")
    page.wait_for_url("**/images/*/")
    row = GenerationRequest.objects.get()

    # Live status: the page is never reloaded (the marker survives), the role=status
    # region ends on "Done", and the delivered image and model badge are swapped in.
    page.evaluate("window.steadyshotMarker = 'still here'")
    expect(page.locator("[data-live-text]")).to_contain_text(
        "Done by Nano Banana Pro", timeout=DONE_WITHIN_MS
    )
    assert page.evaluate("window.steadyshotMarker") == "still here"
    expect(page.locator(".detail-figure .badge.model")).to_contain_text("Nano Banana Pro")
    expect(page.locator(".detail-figure img")).to_be_visible()
    # Visible is not loaded yet: decode() waits for the image (and rejects a broken one).
    loaded = "i => i.decode().then(() => i.naturalWidth, () => 0)"
    assert page.locator(".detail-figure img").evaluate(loaded) > 0
    row.refresh_from_db()
    assert (row.status, row.served_model, row.fell_back) == (Status.SUCCEEDED, PRO, False)

    # The gallery shows it with its model badge; its card opens the detail page.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Gallery").click()
    tile = page.locator(f"#r-{row.pk}")
    expect(tile.locator(".badge.model")).to_contain_text("Nano Banana Pro")
    tile.locator("a.thumb").click()
    page.wait_for_url(f"**/images/{row.pk}/")

    # Remix: the form comes prefilled; two images go to the batch's gallery, where both
    # cards turn into delivered images without a reload.
    page.get_by_role("link", name="Remix").click()
    expect(page.locator("textarea[name=prompt]")).to_have_value("A lighthouse at dusk")
    submit_prompt(page, "A lighthouse at dawn", count=2)
    page.wait_for_url("**/gallery/?batch=*")
    expect(page.locator(".tile")).to_have_count(2)
    expect(page.locator(".tile .badge.model")).to_have_count(2, timeout=DONE_WITHIN_MS)
    remixes = GenerationRequest.objects.filter(remix_of=row)
    assert remixes.count() == 2

    # Filter the gallery by prompt words.
    t.goto("/gallery/")
    expect(page.locator(".tile")).to_have_count(3)
    page.get_by_text("Filter and search").click()
    page.get_by_label("Search prompts").fill("dawn")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".tile")).to_have_count(2)
    expect(page.locator(".tile").first).to_contain_text("dawn")

    # Delete one, with confirmation; it leaves the gallery.
    victim = remixes.first()
    page.locator(f"#r-{victim.pk} a.thumb").click()
    page.get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Yes, delete it").click()
    page.wait_for_url("**/gallery/")
    expect(page.locator(f"#r-{victim.pk}")).to_have_count(0)
    expect(page.locator(".tile")).to_have_count(2)
    t.screenshot("pipeline-gallery-after-delete")
    assert [e for e in t.errors if "Content Security Policy" in e] == []


def test_it_shows_the_fell_back_badge_when_the_primary_is_down(pipeline, workers, tab, alice):
    workers.start(1)
    t = tab()
    page = t.page
    t.log_in(alice)
    t.goto("/new/")
    # The sandbox's prompt trigger: Nano Banana Pro answers 503 UNAVAILABLE.
    submit_prompt(page, f"A harbour at night sandbox:unavailable@{PRO}")
    page.wait_for_url("**/images/*/")
    expect(page.locator("[data-live-text]")).to_contain_text(
        "after falling back from Nano Banana Pro", timeout=DONE_WITHIN_MS
    )
    expect(page.locator(".detail-figure .badge.fellback")).to_be_visible()
    expect(page.locator(".detail-figure .badge.model")).to_contain_text("Nano Banana")
    row = GenerationRequest.objects.get()
    assert (row.served_model, row.fell_back) == (FLASH, True)
    t.screenshot("detail-fell-back")

    t.goto("/gallery/?fell_back=yes")
    expect(page.locator(f"#r-{row.pk} .badge.fellback")).to_have_text("↘ Fell back")


# One snapshot of every status part of the detail page, taken in one go: the page swaps
# its whole body at once, so a snapshot is what a person sees at one moment.
PARTS_JS = """() => {
  const text = (s) => { const e = document.querySelector(s); return e ? e.textContent.trim() : null; };
  return {
    badge: text('[data-part="badge"]'),
    placeholder: text('[data-part="placeholder"]'),
    line: text('[data-live-text]'),
    attempts: text('[data-part="attempts"]'),
    cost: text('[data-part="cost"]'),
    timeline: document.querySelectorAll('.timeline .attempt').length,
    cancel: !!document.querySelector('[data-cancel]'),
    falling_back: text('.detail-figure .badge.fellback'),
    model: text('.detail-figure .badge.model'),
    image: !!document.querySelector('.detail-figure img'),
  };
}"""
STEP_MS = 60_000


@pytest.fixture
def slow_steps(pipeline, monkeypatch, settings):
    """Each step of a request lasts seconds of real time: TIME_SCALE 0.2 makes the
    sandbox's 30 s calls 6 s and its 429 retry delays (15-60 s) 3-12 s, and Nano Banana
    Pro gets two tries before the fallback. The environment is the workers' (this
    fixture comes before `workers`, which start with it)."""
    settings.TIME_SCALE = 0.2
    pipeline.reset()  # the sandbox plays at the same scale
    monkeypatch.setenv("POLICY_QUALITY_ATTEMPTS_PER_MODEL", "2")
    # Quality-first waits out the 429's delay (100 s x 0.2: longer than any of them)
    # instead of falling back at once, so the request is seen waiting.
    monkeypatch.setenv("POLICY_QUALITY_MAX_WAIT_S", "100")


def wait_for_badge(page, label: str) -> dict:
    expect(page.locator('[data-part="badge"]')).to_have_text(label, timeout=STEP_MS)
    return page.evaluate(PARTS_JS)


def test_it_shows_one_status_in_every_part_of_the_page_at_every_step(
    slow_steps, workers, tab, alice
):
    t = tab()
    page = t.page
    t.log_in(alice)
    t.goto("/new/")
    # Pro: a slow 429 (the retry waits for the server's delay), then a 503; Nano Banana
    # slow too, so every step can be seen.
    submit_prompt(
        page,
        f"A harbour at dusk sandbox:rate_limited@{PRO}*1 sandbox:overloaded@{PRO} "
        f"sandbox:slow=30@{PRO}*1 sandbox:slow=30@{FLASH}",
    )
    page.wait_for_url("**/images/*/")
    page.evaluate("window.steadyshotMarker = 'still here'")

    # Queued: no worker runs yet.
    seen = wait_for_badge(page, "Queued")
    assert seen["placeholder"] == "Queued"
    assert seen["line"].startswith("Queued for Nano Banana Pro: waiting for a free worker")
    assert (seen["attempts"], seen["timeline"], seen["cancel"]) == ("0", 0, True)
    assert seen["cost"].startswith("nothing yet")
    assert (seen["falling_back"], seen["model"], seen["image"]) == (None, None, False)
    t.screenshot("walk-1-queued")

    workers.start(1)
    seen = wait_for_badge(page, "Running")
    assert seen["placeholder"] == "Running"
    assert seen["line"] == "Running on Nano Banana Pro."
    assert (seen["attempts"], seen["timeline"], seen["cancel"]) == ("0", 0, True)
    assert seen["cost"].startswith("nothing yet")
    t.screenshot("walk-2-running")

    seen = wait_for_badge(page, "Waiting to retry")
    assert seen["placeholder"] == "Waiting to retry"
    assert seen["line"].startswith("Waiting to retry Nano Banana Pro at ")
    expect(page.locator("#attempts")).to_contain_text("Rate limited (429)")
    assert (seen["attempts"], seen["timeline"], seen["cancel"]) == ("1", 1, True)
    assert seen["cost"].startswith("nothing yet")
    t.screenshot("walk-3-waiting")

    expect(page.locator(".detail-figure .badge.fellback")).to_have_text(
        "↘ Falling back", timeout=STEP_MS
    )
    seen = page.evaluate(PARTS_JS)
    assert seen["badge"] in ("Queued", "Running")
    assert seen["placeholder"] == seen["badge"]
    assert "Nano Banana Pro failed 2 times" in seen["line"]
    assert (seen["attempts"], seen["timeline"], seen["cancel"]) == ("2", 2, True)
    assert seen["cost"].startswith("nothing yet")
    t.screenshot("walk-4-falling-back")

    seen = wait_for_badge(page, "Done")
    assert seen["placeholder"] is None and seen["image"]
    assert seen["line"].startswith("Done by Nano Banana, after falling back from Nano Banana Pro")
    assert (seen["model"], seen["falling_back"]) == ("Served by Nano Banana", "↘ Fell back")
    assert (seen["attempts"], seen["timeline"], seen["cancel"]) == ("3", 3, False)
    assert seen["cost"].startswith("$")
    t.screenshot("walk-5-done")
    assert page.evaluate("window.steadyshotMarker") == "still here"
    row = GenerationRequest.objects.get()
    assert (row.status, row.served_model, row.fell_back, row.attempt_count) == (
        Status.SUCCEEDED,
        FLASH,
        True,
        3,
    )
    assert [e for e in t.errors if "Content Security Policy" in e] == []
