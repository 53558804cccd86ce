"""What a person is told about a request (generator/status.py): one view per render, so
the card, the detail page and the live-status JSON never disagree, and a step that is
overdue says what it waits for instead of a time in the past."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from generator.models import Attempt, GenerationRequest, QuotaState, Status
from generator.status import status_dict, status_text, status_view
from tests.media import private_media
from tests.unit.generator.test_views import make_request

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    private_media(settings, tmp_path)


def attempt(row, number, outcome="overloaded", decision="retry", reason="", model=PRO):
    return Attempt.objects.create(
        request=row,
        number=number,
        model=model,
        provider="gemini",
        outcome=outcome,
        http_status=503 if outcome != "success" else 200,
        latency_ms=900,
        decision=decision,
        decision_reason=reason,
    )


def parts(body: str) -> dict:
    """The status parts of a rendered detail page, as a person reads them."""

    def one(pattern):
        found = re.search(pattern, body, re.S)
        return found[1].strip() if found else None

    return {
        "badge": one(r'data-part="badge">([^<]*)<'),
        "placeholder": one(r'data-part="placeholder">([^<]*)<'),
        "line": one(r"data-live-text>([^<]*)<"),
        "attempts": one(r'data-part="attempts">([^<]*)<'),
        "cost": one(r'data-part="cost">([^<]*)<'),
        "timeline": body.count('class="attempt outcome-'),
        "cancel": "data-cancel" in body,
        "version": one(r'data-version="([^"]*)"'),
    }


def detail(client, row) -> dict:
    return parts(client.get(reverse("generator:detail", args=[row.pk])).content.decode())


def retrying(alice, team, **fields):
    """A request waiting to retry its first model after one failed attempt."""
    row = make_request(alice, team, status=Status.WAITING, **fields)
    attempt(row, 1)
    return row


def test_it_names_a_retry_time_only_while_it_lies_ahead(alice, team):
    # Noon: five minutes later is the same day, whenever the test runs.
    now = timezone.localtime().replace(hour=12, minute=0, second=0, microsecond=0)
    row = retrying(
        alice,
        team,
        waiting_until=now + timedelta(minutes=5),
        status_reason="Nano Banana Pro failed (overloaded); retrying with backoff",
    )
    assert status_view(row, now=now).text == (
        "Waiting to retry Nano Banana Pro at 12:05:00. "
        "Nano Banana Pro failed (overloaded); retrying with backoff."
    )


def test_it_says_tomorrow_when_a_retry_waits_past_midnight(alice, team):
    now = timezone.localtime().replace(hour=23, minute=50, second=0, microsecond=0)
    row = retrying(
        alice,
        team,
        waiting_until=now + timedelta(hours=8, minutes=10),
        status_reason="Nano Banana Pro's daily quota is used up",
    )
    assert status_view(row, now=now).text == (
        "Waiting to retry Nano Banana Pro tomorrow at 08:00:00. "
        "Nano Banana Pro's daily quota is used up."
    )


def test_it_gives_the_date_of_a_retry_later_than_tomorrow(alice, team):
    now = timezone.make_aware(datetime(2026, 3, 4, 23, 50))
    row = retrying(alice, team, waiting_until=now + timedelta(days=1, hours=8))
    assert (
        status_view(row, now=now).text
        == "Waiting to retry Nano Banana Pro on 6 Mar 2026 at 07:50:00."
    )


def test_it_tells_a_retry_time_in_the_current_time_zone(alice, team):
    # 23:30 UTC is already tomorrow in Paris (UTC+1 in March).
    now = datetime(2026, 3, 4, 22, 0, tzinfo=UTC)
    row = retrying(alice, team, waiting_until=now + timedelta(hours=1, minutes=30))
    with timezone.override("Europe/Paris"):
        assert status_view(row, now=now).text == (
            "Waiting to retry Nano Banana Pro tomorrow at 00:30:00."
        )
    with timezone.override("UTC"):
        assert status_view(row, now=now).text == "Waiting to retry Nano Banana Pro at 23:30:00."


def test_it_says_an_overdue_retry_waits_for_a_free_worker_never_a_past_time(alice, team):
    now = timezone.now()
    # Two requests were ready before the overdue retry: they run first.
    make_request(alice, team, status=Status.QUEUED, handed_over=now - timedelta(minutes=3))
    make_request(
        alice, team, status=Status.WAITING, waiting_until=now - timedelta(minutes=2, seconds=30)
    )
    # Became ready after it: not ahead of it.
    make_request(alice, team, status=Status.QUEUED, handed_over=now - timedelta(seconds=10))
    overdue = retrying(
        alice,
        team,
        waiting_until=now - timedelta(minutes=1, seconds=25),
        status_reason="Nano Banana Pro failed (overloaded); retrying with backoff",
    )
    text = status_text(overdue)
    assert text == (
        "The retry of Nano Banana Pro is due, waiting for a free worker, 2 ahead of you. "
        "Nano Banana Pro failed (overloaded); retrying with backoff."
    )
    assert not re.search(r"\d\d:\d\d:\d\d", text)
    data = status_dict(overdue)
    assert (data["ahead"], data["queue_position"], data["waiting_until"]) == (2, 3, None)


def test_it_counts_every_part_of_the_page_from_the_same_attempt_rows(client_for, alice, team):
    # The worker bumps its attempt counter a moment before it writes the attempt row:
    # the page must not say "Attempts 1" beside an empty timeline (or 0 beside #1).
    row = make_request(alice, team, status=Status.RUNNING, attempt_count=1)
    client = client_for(alice)
    shown = detail(client, row)
    assert (shown["attempts"], shown["timeline"]) == ("0", 0)
    attempt(row, 1)
    shown = detail(client, row)
    assert (shown["attempts"], shown["timeline"]) == ("1", 1)


@pytest.mark.parametrize(
    ("fields", "badge", "line_starts", "cancel", "cost"),
    [
        ({"status": Status.QUEUED}, "Queued", "Queued for Nano Banana Pro", True, "nothing yet"),
        ({"status": Status.RUNNING}, "Running", "Running on Nano Banana Pro", True, "nothing yet"),
        (  # its first call waits (a booked quota slot): nothing to "retry" yet
            {"status": Status.WAITING, "waiting_until": timezone.now() + timedelta(hours=1)},
            "Waiting",
            "Waiting to call Nano Banana Pro at",
            True,
            "nothing yet",
        ),
        (
            {"status": Status.RUNNING, "cancel_requested": True},
            "Canceling",
            "Canceling: waiting for Nano Banana Pro to answer the call already made",
            False,
            "nothing yet",
        ),
        (
            {"status": Status.FAILED, "error_message": "The models are unavailable."},
            "Failed",
            "Failed. The models are unavailable.",
            False,
            "nothing (the reservation was refunded)",
        ),
    ],
)
def test_it_shows_one_status_in_every_part_of_the_detail_page(
    client_for, alice, team, fields, badge, line_starts, cancel, cost
):
    quota = QuotaState.REFUNDED if fields["status"] == Status.FAILED else QuotaState.RESERVED
    row = make_request(alice, team, reserved_usd=Decimal("0.134"), **fields)
    GenerationRequest.objects.filter(pk=row.pk).update(quota_state=quota)
    row.refresh_from_db()
    shown = detail(client_for(alice), row)
    assert shown["badge"] == badge
    assert shown["placeholder"] == badge
    assert shown["line"].startswith(line_starts)
    assert shown["cancel"] is cancel
    assert shown["cost"].startswith(cost)


def test_it_shows_a_delivered_request_as_done_everywhere(client_for, alice, team):
    row = make_request(alice, team)
    GenerationRequest.objects.filter(pk=row.pk).update(
        cost_usd=Decimal("0.134"), quota_state=QuotaState.CHARGED
    )
    attempt(row, 1, outcome="success", decision="done", reason="Delivered by Nano Banana Pro")
    body = client_for(alice).get(reverse("generator:detail", args=[row.pk])).content.decode()
    shown = parts(body)
    assert shown["badge"] == "Done"
    assert shown["placeholder"] is None  # the image is shown instead
    assert shown["line"] == "Done by Nano Banana Pro."
    assert shown["cancel"] is False
    assert shown["cost"] == "$0.134"
    assert shown["version"] is None  # final: nothing left to watch
    assert "→ Delivered by Nano Banana Pro" in body
    assert "Delivered: Delivered" not in body


def test_it_renders_the_version_the_json_reports(client_for, alice, team):
    row = make_request(alice, team, status=Status.RUNNING)
    client = client_for(alice)
    status_url = reverse("generator:status", args=[row.pk])
    before = client.get(status_url).json()["version"]
    assert detail(client, row)["version"] == before
    card = client.get(reverse("generator:card", args=[row.pk])).content.decode()
    assert f'data-version="{before}"' in card
    # Each recorded attempt and each change of status changes the version.
    attempt(row, 1)
    after_attempt = client.get(status_url).json()["version"]
    assert after_attempt != before
    GenerationRequest.objects.filter(pk=row.pk).update(
        status=Status.WAITING, waiting_until=timezone.now() + timedelta(minutes=1)
    )
    assert client.get(status_url).json()["version"] != after_attempt


def test_it_says_a_request_is_falling_back_while_it_runs_on_the_next_model(
    client_for, alice, team
):
    row = make_request(
        alice,
        team,
        status=Status.RUNNING,
        fallback_reason="Nano Banana Pro failed 2 times (overloaded); downgrading to Nano Banana",
    )
    GenerationRequest.objects.filter(pk=row.pk).update(current_model=FLASH)
    row.refresh_from_db()
    body = client_for(alice).get(reverse("generator:detail", args=[row.pk])).content.decode()
    assert "↘ Falling back" in body
    assert parts(body)["line"] == (
        "Running on Nano Banana, after falling back from Nano Banana Pro: Nano Banana Pro "
        "failed 2 times (overloaded); downgrading to Nano Banana."
    )


def test_it_refreshes_an_active_page_without_javascript(client_for, alice, team):
    active = make_request(alice, team, status=Status.QUEUED)
    done = make_request(alice, team)
    client = client_for(alice)
    refresh = '<noscript><meta http-equiv="refresh"'
    assert refresh in client.get(reverse("generator:detail", args=[active.pk])).content.decode()
    assert refresh not in client.get(reverse("generator:detail", args=[done.pk])).content.decode()


def test_it_writes_each_decision_once(alice, team):
    row = make_request(alice, team)
    assert attempt(row, 1, decision="done", reason="Delivered by Nano Banana").decision_text == (
        "Delivered by Nano Banana"
    )
    assert attempt(row, 2, decision="canceled", reason="Canceled by the user").decision_text == (
        "Canceled by the user"
    )
    assert attempt(row, 3, reason="Nano Banana Pro failed; retrying").decision_text == (
        "Retry the same model later: Nano Banana Pro failed; retrying"
    )


def test_it_says_an_image_that_answered_a_canceled_call_is_delivered_and_charged(alice, team):
    row = make_request(alice, team, status=Status.SUCCEEDED, cancel_requested=True)
    assert status_view(row).text == (
        "Done by Nano Banana Pro. You asked to cancel while its call was already made: "
        "the image it returned is yours, and charged."
    )


def test_it_says_a_first_call_waits_not_a_retry(alice, team):
    now = timezone.localtime().replace(hour=12, minute=0, second=0, microsecond=0)
    row = make_request(
        alice,
        team,
        status=Status.WAITING,
        waiting_until=now + timedelta(minutes=2),
        status_reason="Nano Banana Pro's upstream quota has no headroom",
    )
    view = status_view(row, now=now)
    assert (view.label, view.attempts) == ("Waiting", 0)
    assert view.text == (
        "Waiting to call Nano Banana Pro at 12:02:00. "
        "Nano Banana Pro's upstream quota has no headroom."
    )
    due = status_view(row, now=now + timedelta(minutes=3)).text
    assert due.startswith("The call to Nano Banana Pro is due, waiting for a free worker")
