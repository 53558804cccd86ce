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
def pipeline(settings, tmp_path, sandbox_settings):
    # Listed before `workers` in the tests' arguments: the workers start with these.
    settings.TIME_SCALE = 0.005
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
    assert page.locator(".detail-figure img").evaluate("i => i.naturalWidth") > 0
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
