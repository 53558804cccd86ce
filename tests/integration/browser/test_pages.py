"""The pages in a real browser, without workers: screenshots at phone and desktop widths,
no CSP violations, and outsiders refused every URL of another team's image."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from generator.images import store_generated_image
from generator.models import Attempt, GenerationRequest, Status
from tests.conftest import PASSWORD
from tests.integration.browser.conftest import DESKTOP, PHONE
from tests.media import picture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    ("width_name", "viewport", "scheme"),
    [("phone", PHONE, "light"), ("desktop", DESKTOP, "light"), ("desktop-dark", DESKTOP, "dark")],
)
def test_it_screenshots_the_prompt_gallery_and_detail_pages(
    tab, alice, images, width_name, viewport, scheme
):
    t = tab(viewport, scheme)
    t.log_in(alice)
    t.goto("/new/")
    assert t.page.get_by_role("heading", name="New image").is_visible()
    t.screenshot(f"prompt-{width_name}")

    t.goto("/gallery/")
    t.load_lazy_images()
    assert t.page.locator(".tile").count() == 5
    assert t.page.locator(".badge.fellback").count() == 1
    # Every thumbnail really loaded (served by the access-checked view).
    loaded = t.page.eval_on_selector_all(".tile img", "imgs => imgs.map(i => i.naturalWidth > 0)")
    assert loaded and all(loaded)
    t.screenshot(f"gallery-{width_name}")

    t.goto(f"/images/{images[1].pk}/")
    t.page.wait_for_load_state("networkidle")
    assert t.page.get_by_text("falling back to Nano Banana").is_visible()
    assert t.page.locator(".timeline .attempt").count() == 2
    t.screenshot(f"detail-{width_name}")

    blocked = [e for e in t.errors if "Content Security Policy" in e]
    assert blocked == []


def test_it_answers_404_to_an_outsider_for_every_image_url(tab, charlie, images):
    t = tab()
    t.log_in(charlie)
    target = images[0].pk
    for path in (
        f"/images/{target}/",
        f"/images/{target}/thumbnail/",
        f"/images/{target}/original/",
    ):
        response = t.goto(path)
        assert response.status == 404, path
    assert t.page.get_by_text("belongs to a team you are not part of").is_visible()
    t.goto("/gallery/")
    assert t.page.locator(".tile").count() == 0


def test_it_shows_friendly_error_pages(tab, alice):
    t = tab()
    t.log_in(alice)
    response = t.goto("/images/00000000-0000-0000-0000-000000000000/")
    assert response.status == 404
    assert t.page.get_by_role("heading", name="Not found").is_visible()
    assert t.page.get_by_role("link", name="Go to the start page").is_visible()
    t.screenshot("error-404")


def test_it_offers_to_copy_a_prompt_only_where_the_script_can(tab, alice, images):
    for javascript in (True, False):
        t = tab(javascript=javascript)
        t.log_in(alice)
        t.goto(f"/images/{images[0].pk}/")
        copy = t.page.get_by_role("button", name="Copy prompt")
        assert copy.is_visible() is javascript  # without the script it could do nothing


def test_it_updates_the_status_live_without_reloading(tab, alice, images):
    """The live status alone (no workers): the row changes under the open pages, and the
    detail page and the gallery card follow within a few seconds without a reload."""
    queued = GenerationRequest.objects.get(status=Status.QUEUED)
    t = tab()
    t.log_in(alice)
    t.goto(f"/images/{queued.pk}/")
    page = t.page
    live = page.locator("[data-live-text]")
    expect(live).to_have_attribute("role", "status")
    expect(live).to_contain_text("Queued for Nano Banana Pro: waiting for a free worker")
    page.evaluate("window.steadyshotMarker = 'still here'")
    # The role=status node itself stays through every swap, so each change is announced.
    page.evaluate("document.querySelector('[data-live-text]').steadyshotMark = 'same node'")

    GenerationRequest.objects.filter(pk=queued.pk).update(
        status=Status.RUNNING, current_model="gemini-3-pro-image-preview"
    )
    expect(live).to_contain_text("Running on Nano Banana Pro.", timeout=5000)

    # An attempt is recorded while the page is open: the timeline shows it at once.
    Attempt.objects.create(
        request=queued,
        number=1,
        model="gemini-3-pro-image-preview",
        provider="gemini",
        started=timezone.now(),
        latency_ms=812,
        outcome="overloaded",
        http_status=503,
        decision=Attempt.Decision.RETRY,
        decision_reason="Nano Banana Pro failed (overloaded); retrying with backoff",
    )
    GenerationRequest.objects.filter(pk=queued.pk).update(attempt_count=1)
    timeline = page.locator("#attempts")
    expect(timeline).to_contain_text("#1 Nano Banana Pro", timeout=5000)
    expect(timeline).to_contain_text("HTTP 503 · 812 ms")
    expect(timeline).to_contain_text("retrying with backoff")
    expect(page.locator('[data-part="attempts"]')).to_have_text("1")

    # As the worker does (in one transaction): the image is stored before the request
    # is seen as done.
    store_generated_image(queued, picture("PNG", (400, 300)))
    GenerationRequest.objects.filter(pk=queued.pk).update(
        status=Status.SUCCEEDED,
        served_model="gemini-3-pro-image-preview",
        finished=timezone.now(),
        delivered_width=400,
        delivered_height=300,
    )
    expect(page.locator("[data-live-text]")).to_contain_text(
        "Done by Nano Banana Pro.", timeout=5000
    )
    expect(page.locator(".detail-figure img")).to_be_visible()
    expect(page.locator(".detail-figure .badge.model")).to_contain_text("Nano Banana Pro")
    assert page.evaluate("window.steadyshotMarker") == "still here"
    mark = "document.querySelector('[data-live-text]').steadyshotMark"
    assert page.evaluate(mark) == "same node"


def test_it_swaps_a_finished_card_into_the_gallery(tab, alice, images):
    queued = GenerationRequest.objects.get(status=Status.QUEUED)
    t = tab(PHONE)
    t.log_in(alice)
    t.goto("/gallery/")
    card = t.page.locator(f"#r-{queued.pk}")
    expect(card.locator("[data-live-text]")).to_contain_text("Queued")
    GenerationRequest.objects.filter(pk=queued.pk).update(
        status=Status.FAILED,
        error_code="unavailable",
        error_message="The image models are unavailable. Try again later.",
        finished=timezone.now(),
    )
    expect(card.locator(".badge.status-failed")).to_have_text("Failed", timeout=5000)
    expect(card.locator("[data-live-text]")).to_have_count(0)
    expect(card).to_contain_text("The image models are unavailable. Try again later.")


def test_it_offers_only_the_sizes_the_chosen_strategy_delivers(tab, alice):
    t = tab()
    t.log_in(alice)
    t.goto("/new/")
    page = t.page
    size = page.locator("select[name=image_size]")
    size.select_option("4K")
    page.get_by_label("Stability first").check()
    # Nano Banana, stability-first's first model, delivers 1K only.
    expect(size).to_have_value("1K")
    expect(size.locator("option[value='4K']")).to_be_disabled()
    page.get_by_label("Quality first").check()
    expect(size.locator("option[value='4K']")).to_be_enabled()
    assert t.errors == []


def test_it_keeps_the_prompt_when_signed_out_in_another_tab(tab, alice):
    t = tab()
    t.log_in(alice)
    t.goto("/new/")
    t.page.fill("textarea[name=prompt]", "A lighthouse at dusk, written before the logout")
    t.page.get_by_label("Stability first").check()
    # Another tab of the same browser logs out meanwhile.
    other = t.context.new_page()
    other.goto(t.base_url + "/")
    other.locator(".menu summary").click()
    other.get_by_role("button", name="Log out").click()
    other.wait_for_load_state()

    t.page.get_by_role("button", name="Generate").click()
    t.page.wait_for_url("**/login/?next=/new/")
    t.page.fill("input[name=username]", alice.email)
    t.page.fill("input[name=password]", PASSWORD)
    t.page.get_by_role("button", name="Log in").click()
    t.page.wait_for_url("**/new/")
    expect(t.page.locator("textarea[name=prompt]")).to_have_value(
        "A lighthouse at dusk, written before the logout"
    )
    expect(t.page.get_by_label("Stability first")).to_be_checked()
    expect(t.page.get_by_text("your prompt was kept")).to_be_visible()
    assert not GenerationRequest.objects.exists()


def test_it_names_the_profile_the_sandbox_plays(tab, alice, sandbox_settings):
    from django.core.cache import cache

    sandbox_settings.set_profile("peak")
    cache.clear()  # the live server runs in this process: forget a profile read before
    t = tab()
    t.log_in(alice)
    notice = t.page.locator("#sandbox-notice")
    expect(notice).to_contain_text("Sandbox upstream, playing the peak profile")
    expect(notice).to_contain_text("the first one from the switch")
    t.goto("/new/")
    expect(t.page.locator("#sandbox-notice .sandbox-profile")).to_have_text("peak")
