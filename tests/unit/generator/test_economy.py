"""Economy requests in-process: admission's rules and price, the plan (Batch mode or the
calmest hour), the batcher's release of scheduled requests, cancel at any point, and
what the pages say. The Batch mode round trip itself runs against the sandbox in
tests/integration/generator/test_economy.py."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from generator import economy
from generator.admission import AdmissionError, Submission, submit
from generator.batching import tick
from generator.models import GenerationRequest, QuotaState, Route, Status, UpstreamBatch
from generator.status import status_view
from quotas.models import UsageEntry

PRO = "gemini-3-pro-image-preview"


def order(user, team, *, hours=24, **fields):
    deadline = timezone.now() + timedelta(hours=hours)
    return submit(
        user,
        team,
        Submission(prompt="a campaign shot", strategy="economy", deadline=deadline, **fields),
    )


def calm_at(monkeypatch, hour: int) -> int:
    """The learned table: Pro fails often all day except at `hour` UTC."""
    table = [(80, 100)] * 24
    table[hour] = (5, 100)
    monkeypatch.setattr(economy, "failures_by_hour", lambda model, now: table)
    return hour


@pytest.fixture
def calm_evenings(monkeypatch):
    return calm_at(monkeypatch, 21)


@pytest.fixture
def calm_later(monkeypatch):
    """A calm hour five hours after the hour the test runs in: ahead whenever it runs."""
    return calm_at(monkeypatch, (timezone.now().hour + 5) % 24)


def test_it_economy_needs_a_deadline_hours_away(alice, team):
    with pytest.raises(AdmissionError) as info:
        submit(alice, team, Submission(prompt="p", strategy="economy"))
    assert info.value.field == "deadline" and "at least 3 h" in info.value.message
    with pytest.raises(AdmissionError):
        order(alice, team, hours=2)
    assert not GenerationRequest.objects.exists()


def test_it_reserves_the_batch_price_and_queues_no_job(
    alice, team, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        (small,) = order(alice, team)
        (large,) = order(alice, team, image_size="4K")
    assert callbacks == []  # nothing goes to Redis: it waits in the database
    assert (small.status, small.route, small.reserved_usd) == (
        Status.SCHEDULED,
        Route.BATCH,
        Decimal("0.067"),
    )
    assert large.reserved_usd == Decimal("0.12")
    reserved = UsageEntry.objects.filter(kind="reserve").values_list("amount_usd", flat=True)
    assert sorted(reserved) == [Decimal("0.067"), Decimal("0.12")]
    assert "Batch mode" in status_view(small).text


def test_it_without_batch_mode_it_waits_for_the_calmest_hour(alice, team, settings, calm_later):
    settings.BATCH_MODE = False
    (request,) = order(alice, team, hours=30)
    assert (request.status, request.route) == (Status.SCHEDULED, Route.OFF_PEAK)
    assert request.waiting_until.hour == calm_later and request.waiting_until > timezone.now()
    assert "calmest hour" in status_view(request).text


def test_it_the_off_peak_plan_keeps_a_margin_before_the_deadline(settings, calm_evenings):
    settings.BATCH_MODE = False
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    for deadline in (now.replace(hour=22), now.replace(hour=21, minute=15)):
        start = economy.plan([PRO], deadline, now).waiting_until
        assert now <= start <= deadline - economy.direct_margin()
    # With room to spare it starts in the calm hour, 21:00 UTC.
    assert economy.plan([PRO], now.replace(hour=23), now).waiting_until.hour == 21


def test_it_the_batcher_releases_an_off_peak_request_at_its_hour(
    alice, team, settings, calm_evenings
):
    settings.BATCH_MODE = False
    (request,) = order(alice, team, hours=30)

    tick(now=request.waiting_until - timedelta(seconds=1))
    request.refresh_from_db()
    assert request.status == Status.SCHEDULED

    report = tick(now=request.waiting_until)
    request.refresh_from_db()
    assert (report.released, request.status, request.step) == (1, Status.QUEUED, 2)
    assert request.route == Route.OFF_PEAK


def test_it_a_request_too_close_to_its_deadline_for_a_batch_goes_directly(alice, team):
    (request,) = order(alice, team, hours=4)
    report = tick(now=request.deadline - timedelta(minutes=29))
    request.refresh_from_db()
    assert (report.direct, request.status, request.route) == (1, Status.QUEUED, Route.DIRECT)
    assert "too close" in request.left_batch_reason
    assert not UpstreamBatch.objects.exists()


def test_it_the_batcher_waits_for_the_age_of_a_small_batch(alice, team, settings):
    settings.BATCH_MAX_REQUESTS = 3
    order(alice, team, count=2)
    tick()
    assert not UpstreamBatch.objects.exists()
    later = timezone.now() + timedelta(seconds=settings.BATCH_MAX_AGE_S + 1)
    # Sending fails here (no upstream in this tier), but the batch is closed.
    tick(now=later)
    [batch] = UpstreamBatch.objects.all()
    assert (batch.model, batch.image_size, batch.requests.count()) == (PRO, "1K", 2)
    assert set(batch.requests.values_list("status", flat=True)) == {Status.BATCHED}


@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.BATCHED])
def test_it_cancel_ends_a_waiting_economy_request_at_once_refunded(alice, team, status):
    (request,) = order(alice, team)
    GenerationRequest.objects.filter(pk=request.pk).update(status=status)
    request.refresh_from_db()

    assert request.cancel(alice)

    request.refresh_from_db()
    assert (request.status, request.quota_state) == (Status.CANCELED, QuotaState.REFUNDED)


def test_it_is_charged_no_more_than_its_batch_price_whichever_way_it_was_served(alice, team):
    (request,) = order(alice, team)
    assert request.price_to_charge(Decimal("0.134")) == Decimal("0.067")
    assert request.price_to_charge(Decimal("0.039")) == Decimal("0.039")


def test_it_the_page_says_how_it_was_served(client_for, alice, team):
    (request,) = order(alice, team)
    batch = UpstreamBatch.objects.create(
        model=PRO, image_size="1K", name="batches/abc123", state="succeeded", lines=1
    )
    GenerationRequest.objects.filter(pk=request.pk).update(
        status=Status.SUCCEEDED,
        served_model=PRO,
        cost_usd=Decimal("0.067"),
        upstream_batch=batch,
        finished=request.created + timedelta(hours=11),
    )
    request.refresh_from_db()
    assert request.served_how == "Batch, Nano Banana Pro, 11 h"

    page = client_for(alice).get(reverse("generator:detail", args=[request.pk])).content.decode()
    assert "Batch, Nano Banana Pro, 11 h" in page
    assert "abc123 (succeeded, 1 image)" in page
    assert "$0.067" in page
    gallery = client_for(alice).get(reverse("generator:gallery")).content.decode()
    assert "Batch, Nano Banana Pro, 11 h" in gallery


def test_it_the_form_offers_economy_and_explains_a_missing_deadline(client_for, alice):
    client = client_for(alice)
    form = client.get(reverse("generator:prompt")).content.decode()
    assert 'value="economy"' in form and "at least 3 h away" in form
    response = client.post(
        reverse("generator:prompt"),
        {"prompt": "a campaign shot", "strategy": "economy", "aspect_ratio": "1:1",
         "image_size": "1K", "count": 1},
    )  # fmt: skip
    assert response.status_code == 200
    assert "Economy needs a “Deliver by”" in response.content.decode()
    assert not GenerationRequest.objects.exists()


def test_it_a_rerun_keeps_the_lead_time_of_the_original(client_for, alice, team):
    (request,) = order(alice, team, hours=10)
    client_for(alice).post(reverse("generator:rerun", args=[request.pk]))
    rerun = GenerationRequest.objects.exclude(pk=request.pk).get()
    lead = rerun.deadline - rerun.created
    assert timedelta(hours=9, minutes=59) < lead <= timedelta(hours=10)


def test_it_operators_read_the_batches_in_the_admin_and_cannot_change_them(client, db):
    from accounts.models import User

    admin = User.objects.create_superuser("root@example.com", "pw-long-enough-1")
    UpstreamBatch.objects.create(model=PRO, image_size="1K", name="batches/seen-here")
    client.force_login(admin)
    listing = client.get(reverse("admin:generator_upstreambatch_changelist"))
    assert listing.status_code == 200 and "batches/seen-here" in listing.content.decode()
    assert client.get(reverse("admin:generator_upstreambatch_add")).status_code == 403
