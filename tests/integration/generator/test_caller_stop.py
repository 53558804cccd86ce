"""A caller asked to stop (SIGTERM: a deploy, a rolling restart) loses nothing: its
calls in flight finish within WORKER_STOP_GRACE_SECONDS, or are handed back to the
queue for another caller at once, without waiting for the lease and the reconciler.
(A worker's step no longer waits on the upstream: it ends within milliseconds.)"""

import signal
import time

import pytest

from generator.admission import Submission, submit
from generator.caller import calls
from generator.caller.process import HANDED_BACK
from generator.jobs import advance
from generator.models import CALLS_HOLDER, Attempt, Expect, GenerationRequest, Image, Status
from tests.integration.generator.test_chain import wait_for_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PRO = "gemini-3-pro-image-preview"


@pytest.fixture
def stoppable(settings, tmp_path, sandbox_settings, workers):
    # A long lease and no reconciler: only a hand-back can move a request on quickly.
    settings.LEASE_SECONDS = 600
    settings.MEDIA_ROOT = tmp_path / "media"
    # Emulated time runs 10x: the request's 1200 s budget is 120 s here, room for a start.
    settings.TIME_SCALE = 0.1
    sandbox_settings.reset()
    return workers


def _calling(request, workers, timeout=60.0) -> GenerationRequest:
    """The request's row once the caller has taken its call."""
    caller = f":{workers.callers[-1].pid}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = GenerationRequest.objects.get(pk=request.pk)
        if row.status == Status.RUNNING and row.claimed_by.endswith(caller):
            return row
        time.sleep(0.05)
    pytest.fail(f"the caller did not take the call within {timeout:.0f} s")


def _stop_caller(workers, timeout=60.0) -> None:
    process = workers.callers[-1]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=timeout)


def test_it_hands_a_long_call_back_and_another_caller_delivers_it(stoppable, alice, team):
    stoppable.env["WORKER_STOP_GRACE_SECONDS"] = "1"
    stoppable.start(1)
    # The first call takes 30 s (300 emulated seconds), far past the grace.
    (request,) = submit(alice, team, Submission(prompt="a fox sandbox:slow=300*1"))
    held = _calling(request, stoppable)

    _stop_caller(stoppable)

    row = GenerationRequest.objects.get(pk=request.pk)
    assert row.status in (Status.QUEUED, Status.RUNNING), stoppable.output()[-2000:]
    assert (row.step, row.recoveries) == (held.step + 1, 0)
    assert row.status_reason == HANDED_BACK or row.claimed_by == CALLS_HOLDER
    stoppable.start_caller()
    (done,) = wait_for_all([request], timeout=120)
    assert done.status == Status.SUCCEEDED, done.error_message
    assert Image.objects.filter(request=done).count() == 1


def test_it_lets_a_call_finish_within_the_grace(stoppable, alice, team):
    stoppable.env["WORKER_STOP_GRACE_SECONDS"] = "120"
    stoppable.start(1)
    # 3 s: well inside the grace.
    (request,) = submit(alice, team, Submission(prompt="a fox sandbox:slow=30*1"))
    _calling(request, stoppable)

    _stop_caller(stoppable, timeout=120)

    (row,) = wait_for_all([request], timeout=60)
    assert row.status == Status.SUCCEEDED, stoppable.output()[-2000:]
    assert row.attempts.count() == 1


def test_it_calls_again_when_a_stopped_step_left_a_success_undelivered(
    sandbox_settings, redis_conn, settings, tmp_path, alice, team
):
    """A step handed back (or whose worker died) after its call succeeded but before the
    image was stored: the next step must call again, not hand over forever. (Without a
    caller running, the call waits in Redis for one.)"""
    settings.MEDIA_ROOT = tmp_path / "media"
    (request,) = submit(alice, team, Submission(prompt="a fox"))
    # Step 1 called and succeeded, then stopped; the reconciler took the request back.
    request = GenerationRequest.objects.claim(request.pk, request.step, "gone:1")
    Attempt.objects.create(
        request=request, number=1, model=PRO, provider="gemini", outcome="success", latency_ms=900
    )
    assert request.hand_over(Expect.seen(Status.RUNNING, request.step), model=PRO, reason="Lost")

    assert advance(str(request.pk), request.step) == "calling"
    row = GenerationRequest.objects.get(pk=request.pk)
    assert (row.status, row.claimed_by, row.current_model) == (Status.RUNNING, CALLS_HOLDER, PRO)
    assert redis_conn.llen(calls.CALLS_KEY) == 1
