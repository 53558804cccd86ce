"""An economy request in the browser, the whole way: the form, the cron's batcher (a real
`rqcron` process and a worker), the sandbox's Batch mode over HTTP, and the detail page
and the gallery saying how it was served: its batch, its cost and its time."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from generator.models import GenerationRequest, Route, Status

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A bound on waiting only: at TIME_SCALE 0.005 the sandbox's batches run 3-18 s.
DONE_WITHIN_MS = 120_000


@pytest.fixture
def economy_run(settings, tmp_path, sandbox_settings, monkeypatch):
    # Listed before `workers` in the test's arguments: the workers and the cron start
    # with these.
    settings.TIME_SCALE = 0.005
    settings.LEASE_SECONDS = 2
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setenv("BATCH_TICK_SECONDS", "1")
    sandbox_settings.reset()
    return sandbox_settings


def test_it_an_economy_request_is_served_through_batch_mode(economy_run, workers, tab, alice):
    workers.start(1)
    workers.start_cron()
    t = tab()
    page = t.page
    t.log_in(alice)
    t.goto("/new/")

    page.fill("textarea[name=prompt]", "A campaign shot of a red bicycle")
    page.check("input[name=strategy][value=economy]")
    # Ten minutes of real time: 33 hours at this time scale, well past the 3 hours needed.
    deadline = timezone.now() + timedelta(minutes=10)
    page.fill("input[name=deadline]", f"{deadline:%Y-%m-%dT%H:%M}")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_url("**/images/*/")
    row = GenerationRequest.objects.get()
    assert (row.strategy, row.route) == ("economy", Route.BATCH)

    expect(page.locator("[data-live-text]")).to_contain_text(
        "Done: Batch, Nano Banana Pro", timeout=DONE_WITHIN_MS
    )
    row.refresh_from_db()
    assert row.status == Status.SUCCEEDED
    batch = row.upstream_batch
    expect(page.locator('[data-part="batch"]')).to_contain_text(f"{batch.short_name} (succeeded")
    expect(page.locator('[data-part="cost"]')).to_have_text("$0.067")
    expect(page.locator('[data-part="served-how"]')).to_have_text(row.served_how)
    expect(page.locator(".detail-figure img")).to_be_visible()
    t.screenshot("economy-detail")

    # The sandbox served it as a line of that batch, and never as a direct call.
    [sent] = economy_run.batches()
    assert (sent["name"], sent["keys"]) == (batch.name, [str(row.pk)])
    assert [c["protocol"] for c in economy_run.calls()] == ["gemini-batch"]

    t.goto("/gallery/")
    expect(page.locator(f"#r-{row.pk} .tile-served")).to_have_text(row.served_how)
