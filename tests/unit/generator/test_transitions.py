"""A request's state moves only through GenerationRequest's transitions, each a filtered
UPDATE on what its writer expects: claim, hand_over, finish, cancel."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from generator import queue
from generator.admission import Submission, submit
from generator.models import Expect, GenerationRequest, QuotaState, Status
from quotas.models import UsageEntry


@pytest.fixture
def queued(alice, team):
    (request,) = submit(alice, team, Submission(prompt="a lighthouse at dusk"))
    return request


@pytest.fixture
def enqueued(monkeypatch):
    """What the transitions hand to the queue (RQ itself is the integration tier's)."""
    calls = []
    monkeypatch.setattr(queue, "enqueue", lambda request, at=None: calls.append((request, at)))
    return calls


def test_it_claims_a_step_once(queued):
    assert GenerationRequest.objects.claim(queued.pk, queued.step, "w1")
    assert not GenerationRequest.objects.claim(queued.pk, queued.step, "w2")
    queued.refresh_from_db()
    assert (queued.status, queued.claimed_by) == (Status.RUNNING, "w1")
    assert queued.lease_until > timezone.now()


def test_it_reads_the_row_with_its_claim(queued, django_assert_num_queries):
    """One statement (UPDATE … RETURNING, Postgres and SQLite alike): the row as the claim
    left it, its computed fields (`started`) included."""
    with django_assert_num_queries(1):
        row = GenerationRequest.objects.claim(queued.pk, queued.step, "w1")
    assert (row.pk, row.status, row.claimed_by, row.step) == (
        queued.pk,
        Status.RUNNING,
        "w1",
        queued.step,
    )
    assert row.started is not None and row.lease_until > timezone.now()
    assert (row.prompt, row.chain, row.team_id) == (queued.prompt, queued.chain, queued.team_id)
    stored = GenerationRequest.objects.get(pk=queued.pk)
    assert (row.started, row.lease_until, row.created) == (
        stored.started,
        stored.lease_until,
        stored.created,
    )
    assert GenerationRequest.objects.claim(queued.pk, queued.step, "w2") is None


def test_it_ignores_a_job_for_another_step(queued):
    assert not GenerationRequest.objects.claim(queued.pk, queued.step + 1, "w1")
    queued.refresh_from_db()
    assert queued.status == Status.QUEUED


def test_it_hands_a_step_over_to_the_queue_after_commit(
    queued, enqueued, django_capture_on_commit_callbacks
):
    GenerationRequest.objects.claim(queued.pk, queued.step, "w1")
    at = timezone.now() + timedelta(seconds=30)
    with django_capture_on_commit_callbacks(execute=True):
        assert queued.hand_over(
            Expect.held("w1", queued.step), model="gemini-2.5-flash-image", reason="why", at=at
        )
        assert enqueued == []  # not before the commit
    row = GenerationRequest.objects.get(pk=queued.pk)
    assert (row.status, row.step, row.claimed_by) == (Status.WAITING, 2, "")
    assert (row.current_model, row.status_reason, row.waiting_until) == (
        "gemini-2.5-flash-image",
        "why",
        at,
    )
    assert enqueued == [(queued, at)] and queued.step == 2


def test_it_a_step_that_lost_its_claim_changes_nothing(
    queued, enqueued, django_capture_on_commit_callbacks
):
    GenerationRequest.objects.claim(queued.pk, queued.step, "w1")
    held = Expect.held("w1", queued.step)
    # The reconciler took the request back from w1 (presumed dead) and queued it again.
    reconciler_view = GenerationRequest.objects.get(pk=queued.pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert reconciler_view.hand_over(
            Expect.seen(Status.RUNNING, reconciler_view.step),
            model=reconciler_view.current_model,
            reason="Recovered",
        )
    # w1 wakes up: neither its end state nor its hand-over lands.
    assert not queued.finish(
        Status.SUCCEEDED, held, served_model="gemini-3-pro-image-preview", cost_usd=Decimal(1)
    )
    assert not queued.hand_over(held, model="gemini-3-pro-image-preview", reason="retry")
    row = GenerationRequest.objects.get(pk=queued.pk)
    assert (row.status, row.step, row.quota_state) == (Status.QUEUED, 2, QuotaState.RESERVED)
    assert len(enqueued) == 1


def test_it_ends_a_request_once_and_settles_its_quota_with_it(queued):
    GenerationRequest.objects.claim(queued.pk, queued.step, "w1")
    held = Expect.held("w1", queued.step)
    assert queued.finish(
        Status.SUCCEEDED,
        held,
        served_model="gemini-2.5-flash-image",
        fell_back=True,
        cost_usd=Decimal("0.039"),
        attempt_count=2,
    )
    assert not queued.finish(Status.FAILED, held, error_code="overloaded")
    row = GenerationRequest.objects.get(pk=queued.pk)
    assert (row.status, row.served_model, row.attempt_count) == (
        Status.SUCCEEDED,
        "gemini-2.5-flash-image",
        2,
    )
    assert row.finished is not None and row.lease_until is None
    assert row.quota_state == QuotaState.CHARGED
    (charge,) = UsageEntry.objects.filter(request_id=queued.pk, kind="charge")
    assert charge.amount_usd == Decimal("0.039")
    assert not UsageEntry.objects.filter(request_id=queued.pk, kind="refund").exists()


def test_it_ends_and_settles_a_request_in_three_statements(queued, django_assert_num_queries):
    """The end and its quota state in one UPDATE, the team's limits, the ledger's row: no
    savepoint and no second UPDATE (a team without limits moves no counter)."""
    GenerationRequest.objects.claim(queued.pk, queued.step, "w1")
    with django_assert_num_queries(3):
        assert queued.finish(Status.FAILED, Expect.held("w1", queued.step), error_code="x")
    row = GenerationRequest.objects.get(pk=queued.pk)
    assert (row.status, row.quota_state) == (Status.FAILED, QuotaState.REFUNDED)
    assert UsageEntry.objects.filter(request_id=queued.pk, kind="refund").count() == 1


def test_it_does_not_end_a_request_that_was_settled_already(queued):
    """A settlement before the end cannot happen (only ended requests are settled); if the
    ledger ever held one, the end fails whole rather than settle twice."""
    UsageEntry.objects.create(
        team_id=queued.team_id,
        user_id=queued.user_id,
        request_id=queued.pk,
        kind="refund",
        images=1,
        amount_usd=0,
        reserved_usd=queued.reserved_usd,
        admitted=queued.created,
    )
    GenerationRequest.objects.claim(queued.pk, queued.step, "w1")
    with pytest.raises(IntegrityError), transaction.atomic():
        queued.finish(Status.FAILED, Expect.held("w1", queued.step), error_code="x")
    row = GenerationRequest.objects.get(pk=queued.pk)
    assert (row.status, row.quota_state) == (Status.RUNNING, QuotaState.RESERVED)


def test_it_refuses_to_finish_into_a_state_that_is_not_an_end(queued):
    with pytest.raises(ValueError, match="not an end state"):
        queued.finish(Status.WAITING, Expect.off_worker())


def test_it_a_cancel_ends_a_queued_request_at_once_and_refunds_it(queued, alice):
    assert queued.cancel(alice)
    assert (queued.status, queued.error_code) == (Status.CANCELED, "canceled")
    assert queued.quota_state == QuotaState.REFUNDED
    assert UsageEntry.objects.filter(request_id=queued.pk, kind="refund").count() == 1
    assert not queued.cancel(alice)  # already ended


def test_it_a_cancel_only_flags_a_running_request(queued, alice):
    GenerationRequest.objects.claim(queued.pk, queued.step, "w1")
    assert queued.cancel(alice)
    assert (queued.status, queued.cancel_requested) == (Status.RUNNING, True)
    assert queued.quota_state == QuotaState.RESERVED


def test_it_pages_newest_first_by_keyset(alice, team):
    requests = submit(alice, team, Submission(prompt="four of them", count=4))
    newest_first = sorted(requests, key=lambda r: (r.created, r.pk), reverse=True)
    rows = GenerationRequest.objects.visible_to(alice)
    first = rows.page(None, 3)
    assert [r.pk for r in first.rows] == [r.pk for r in newest_first[:3]]
    assert first.next_before == newest_first[2].pk
    last = rows.page(first.next_before, 3)
    assert [r.pk for r in last.rows] == [newest_first[3].pk]
    assert last.next_before is None and last.anchor_found


def test_it_shows_outsiders_nothing_and_says_when_an_anchor_is_unknown(alice, team, charlie):
    submit(alice, team, Submission(prompt="private"))
    assert not GenerationRequest.objects.visible_to(charlie).exists()
    page = GenerationRequest.objects.visible_to(alice).page(team.pk, 10)
    assert not page.anchor_found
