"""The caller records the answers of its calls itself (generator.jobs.record, in its
thread pool): no job and no answer in Redis between the call and the delivery, every
write filtered on the caller's claim, and a caller that dies while recording leaves the
request to the reconciler, which still ends it once."""

import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generator import jobs, queue
from generator.admission import Submission, submit
from generator.caller.calls import CALLS_KEY, Answer, Call
from generator.image_check import prepare_generated_image
from generator.models import CALLS_HOLDER, Attempt, Expect, GenerationRequest, Image, Status
from generator.reconcile import reconcile
from generator.resilience.taxonomy import Outcome
from generator.upstream.base import GenerationResult, UpstreamError
from quotas.models import UsageEntry
from tests.integration.generator.test_chain import failures, wait_for_all
from tests.media import picture

pytestmark = pytest.mark.django_db(transaction=True)

CALLER = "caller-host:4242"


@pytest.fixture
def taken(redis_conn, settings, tmp_path, alice, team):
    """A request whose step chose its call, taken by CALLER: the state a call is in while
    the upstream answers."""
    settings.MEDIA_ROOT = tmp_path / "media"
    (request,) = submit(alice, team, Submission(prompt="a lighthouse at dusk"))
    assert jobs.advance(str(request.pk), request.step) == "calling"
    assert GenerationRequest.objects.pass_claim(request.pk, request.step, CALLS_HOLDER, CALLER)
    return GenerationRequest.objects.get(pk=request.pk)


def _jobs(redis_conn) -> list[str]:
    return sorted(queue.get_queue().get_job_ids())


def test_it_delivers_an_answer_under_the_callers_claim_without_a_job(taken, redis_conn):
    queued_before = _jobs(redis_conn)
    result = GenerationResult(
        data=picture("PNG"),
        mime="image/png",
        latency_ms=900,
        prepared=prepare_generated_image(picture("PNG")),
    )

    outcome = jobs.record(str(taken.pk), taken.step, CALLER, Answer(timezone.now(), result=result))

    assert outcome == "succeeded"
    row = GenerationRequest.objects.get(pk=taken.pk)
    assert (row.status, row.quota_state, row.step) == (Status.SUCCEEDED, "charged", taken.step)
    assert Image.objects.get(request=row).thumbnail
    (attempt,) = row.attempts.all()
    assert (attempt.worker, attempt.outcome, attempt.decision) == (CALLER, "success", "done")
    assert _jobs(redis_conn) == queued_before  # nothing queued to record or deliver it


def test_it_hands_a_failed_call_to_the_queue_under_the_callers_claim(taken, redis_conn):
    error = UpstreamError(Outcome.SERVER_ERROR, "500 INTERNAL", http_status=500, latency_ms=80)

    outcome = jobs.record(str(taken.pk), taken.step, CALLER, Answer(timezone.now(), error=error))

    assert outcome == "waiting"  # a retry after a backoff, through the workers' scheduler
    row = GenerationRequest.objects.get(pk=taken.pk)
    assert (row.status, row.step, row.claimed_by) == (Status.WAITING, taken.step + 1, "")
    (attempt,) = row.attempts.all()
    assert (attempt.worker, attempt.outcome, attempt.decision) == (CALLER, "server_error", "retry")
    # The next step is the only job: one RQ job per step, none for the recording.
    scheduled = queue.get_queue().scheduled_job_registry.get_job_ids()
    assert scheduled == [queue.job_id(row.pk, row.step)]
    assert redis_conn.keys("rq:job:rec-*") == []


def test_it_delivers_and_charges_an_image_that_answers_a_canceled_call(taken, redis_conn, alice):
    """The call in flight cannot be taken back and the upstream bills its image: the
    person gets it, charged, and the request says it was canceled too late."""
    assert taken.cancel(alice)
    assert GenerationRequest.objects.get(pk=taken.pk).status_reason.startswith(
        "Cancel requested. The call already made cannot be taken back"
    )
    result = GenerationResult(data=picture("PNG"), mime="image/png", latency_ms=900)

    outcome = jobs.record(str(taken.pk), taken.step, CALLER, Answer(timezone.now(), result=result))

    assert outcome == "succeeded"
    row = GenerationRequest.objects.get(pk=taken.pk)
    assert (row.status, row.quota_state, row.cancel_requested) == (
        Status.SUCCEEDED,
        "charged",
        True,
    )
    assert Image.objects.filter(request=row).exists()


def test_it_ends_a_canceled_call_that_fails_canceled_and_refunded(taken, redis_conn, alice):
    assert taken.cancel(alice)
    error = UpstreamError(Outcome.UNAVAILABLE, "503", http_status=503, latency_ms=80)

    outcome = jobs.record(str(taken.pk), taken.step, CALLER, Answer(timezone.now(), error=error))

    assert outcome == "canceled"
    row = GenerationRequest.objects.get(pk=taken.pk)
    assert (row.status, row.quota_state, row.status_reason) == (Status.CANCELED, "refunded", "")
    assert queue.get_queue().scheduled_job_registry.get_job_ids() == []  # nothing more tried


def test_it_drops_an_answer_the_reconciler_took_back(taken, redis_conn):
    step = taken.step
    # The caller's lease ran out while it waited on the upstream: the request went round.
    taken.hand_over(Expect.seen(Status.RUNNING, step), model=taken.current_model, reason="Lost")
    result = GenerationResult(data=picture("PNG"), mime="image/png", latency_ms=900)

    outcome = jobs.record(str(taken.pk), step, CALLER, Answer(timezone.now(), result=result))

    assert outcome == "stale"
    row = GenerationRequest.objects.get(pk=taken.pk)
    assert (row.status, row.step) == (Status.QUEUED, step + 1)
    assert not Attempt.objects.filter(request=row).exists()
    assert not Image.objects.filter(request=row).exists()


def _waiting_on_a_lock(statement_start: str) -> bool:
    with connection.cursor() as cursor:
        # Inside a transaction the statistics are a snapshot taken once: take a new one.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE %s",
            [statement_start + "%"],
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.slow
@pytest.mark.skipif(connection.vendor != "postgresql", reason="waits on Postgres's row locks")
def test_it_delivers_once_when_the_caller_dies_before_its_recording_commits(
    settings, tmp_path, sandbox_settings, workers, alice, team
):
    settings.TIME_SCALE = 0.02
    settings.LEASE_SECONDS = 2
    settings.RECONCILE_GRACE_SECONDS = 1
    settings.MEDIA_ROOT = tmp_path / "media"
    sandbox_settings.reset()
    (request,) = submit(alice, team, Submission(prompt="a lighthouse", strategy="stability-first"))
    # An image of the request inserted and not committed: the caller's delivery, in its
    # transaction, waits on it (one image per request) after the upstream answered, the
    # attempt was recorded and the request marked succeeded, all uncommitted.
    with transaction.atomic():
        Image.objects.create(
            request=request, team=team, width=1, height=1, mime="image/png", bytes=1, sha256="x"
        )
        workers.start(1)
        caller = workers.callers[0]
        deadline = time.monotonic() + 60
        while not _waiting_on_a_lock('INSERT INTO "generator_image"'):
            assert time.monotonic() < deadline, workers.output()[-2000:]
            time.sleep(0.05)
        workers.kill(workers.processes.index(caller))
        transaction.set_rollback(True)
    workers.start_caller()
    (row,) = wait_for_all([request], timeout=120, during=reconcile)

    assert row.status == Status.SUCCEEDED, failures([row])
    assert row.recoveries == 1
    assert Image.objects.filter(request=row).count() == 1
    assert UsageEntry.objects.filter(request_id=row.pk).count() == 1
    assert row.quota_state == "charged"
    # The dead caller's success stays in the log; the delivery is the other caller's.
    attempts = list(row.attempts.order_by("number"))
    assert [a.outcome for a in attempts] == ["success", "success"]
    assert [a.decision for a in attempts] == ["", "done"]
    assert attempts[0].worker.endswith(f":{caller.pid}")
    assert not attempts[1].worker.endswith(f":{caller.pid}")
    assert row.finished - row.created < timedelta(minutes=5)


def test_a_step_sends_the_references_with_the_call_and_reads_none_without(
    redis_conn, settings, tmp_path, alice, team
):
    settings.MEDIA_ROOT = tmp_path / "media"
    (edit,) = submit(
        alice, team, Submission(prompt="make it blue", uploads=[(picture("PNG"), "image/png")])
    )
    (plain,) = submit(alice, team, Submission(prompt="a lighthouse"))
    redis_conn.delete(CALLS_KEY)

    assert jobs.advance(str(edit.pk), edit.step) == "calling"
    with CaptureQueriesContext(connection) as queries:
        assert jobs.advance(str(plain.pk), plain.step) == "calling"

    sent = [Call.loads(raw) for raw in redis_conn.lrange(CALLS_KEY, 0, -1)]
    assert [call.request_id for call in sent] == [str(edit.pk), str(plain.pk)]
    (reference,) = edit.references.all()
    assert sent[0].references == ((reference.file.name, "image/png"),)
    assert sent[1].references == ()
    assert not [q for q in queries.captured_queries if "referenceimage" in q["sql"]]
