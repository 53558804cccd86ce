"""A call passes from the worker that chose it to a caller, which records its answer
(generator/caller): the claim moves with one filtered UPDATE at a time, and a call
travels through Redis unchanged."""

from datetime import timedelta

import pytest
from django.utils import timezone

from generator.admission import Submission, submit
from generator.caller.calls import Call
from generator.models import CALLS_HOLDER, Expect, GenerationRequest, Status

PRO = "gemini-3-pro-image-preview"


@pytest.fixture
def sent(alice, team):
    """A request whose step chose to call Pro: its claim is with the queue of calls."""
    (request,) = submit(alice, team, Submission(prompt="a lighthouse at dusk"))
    assert GenerationRequest.objects.claim(request.pk, request.step, "worker-1")
    request.refresh_from_db()
    assert request.send_to_caller(Expect.held("worker-1", request.step), PRO)
    return request


def _row(request) -> GenerationRequest:
    return GenerationRequest.objects.get(pk=request.pk)


def test_it_passes_the_claim_from_the_worker_to_a_caller_that_keeps_it(sent):
    assert (_row(sent).claimed_by, _row(sent).current_model) == (CALLS_HOLDER, PRO)
    assert GenerationRequest.objects.pass_claim(sent.pk, sent.step, CALLS_HOLDER, "caller-1")
    # A second caller that popped a duplicate of the call takes nothing.
    assert not GenerationRequest.objects.pass_claim(sent.pk, sent.step, CALLS_HOLDER, "caller-2")
    # The caller keeps it to record the answer: a fresh lease, and the row as it is now.
    row = GenerationRequest.objects.pass_claim(sent.pk, sent.step, "caller-1", "caller-1")
    assert (row.status, row.claimed_by, row.current_model) == (Status.RUNNING, "caller-1", PRO)
    assert row.lease_until > timezone.now()
    assert _row(sent).claimed_by == "caller-1"


def test_it_drops_a_call_the_request_has_moved_on_from(sent):
    GenerationRequest.objects.filter(pk=sent.pk).update(step=sent.step + 1)
    assert not GenerationRequest.objects.pass_claim(sent.pk, sent.step, CALLS_HOLDER, "caller-1")
    assert _row(sent).claimed_by == CALLS_HOLDER


def test_it_renews_only_the_leases_a_caller_holds(sent, alice, team):
    (other,) = submit(alice, team, Submission(prompt="another lighthouse"))
    GenerationRequest.objects.pass_claim(sent.pk, sent.step, CALLS_HOLDER, "caller-1")
    past = timezone.now() - timedelta(seconds=5)
    GenerationRequest.objects.filter(pk=sent.pk).update(lease_until=past)

    assert GenerationRequest.objects.renew_leases([sent.pk, other.pk], "caller-1") == 1
    assert GenerationRequest.objects.renew_leases([sent.pk], "caller-2") == 0
    assert _row(sent).lease_until > timezone.now()


def test_it_carries_a_call_through_redis_unchanged():
    call = Call("r-1", 3, PRO, "a fox", "16:9", "2K", (("references/a.png", "image/png"),))
    assert Call.loads(call.dumps()) == call
