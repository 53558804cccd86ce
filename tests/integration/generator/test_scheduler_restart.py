"""A restart after a crash resumes delayed retries at once (issue 13): the lock of a
SIGKILLed scheduler is taken over, and the reconciler moves scheduled jobs that no
scheduler moved in time."""

import os
import socket
import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.utils import utcformat

from drills.run import wait_for
from generator import queue
from generator.admission import Submission, submit
from generator.models import GenerationRequest, Status
from generator.reconcile import reconcile
from generator.scheduling import release_stale_locks
from tests.integration.generator.test_chain import wait_for_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LOCK = SCHEDULER_LOCKING_KEY_TEMPLATE % queue.QUEUE
# RQ alone starts no scheduler for 10 minutes after such a restart: every figure below
# is a small fraction of that.
RQ_RETRY_S = 600


def _waiting(request) -> GenerationRequest:
    def check():
        row = GenerationRequest.objects.get(pk=request.pk)
        return row if row.status == Status.WAITING and row.waiting_until else None

    return wait_for(check, 60, "the request did not wait for a retry")


def test_it_runs_a_delayed_retry_soon_after_a_restart_that_follows_a_sigkill(
    settings, tmp_path, sandbox_settings, workers, redis_conn, alice, team
):
    settings.MEDIA_ROOT = tmp_path / "media"
    # Emulated time at a fifth: the sandbox's 429 asks for 15-60 s, 3-12 s here, time
    # enough to see the request wait and kill its worker before the retry is due.
    settings.TIME_SCALE = 0.2
    sandbox_settings.reset()
    workers.env["TIME_SCALE"] = "0.2"
    workers.start(1)
    wait_for(lambda: redis_conn.get(LOCK), 60, "the worker never took the scheduler lock")

    (request,) = submit(alice, team, Submission(prompt="a fox sandbox:rate_limited*1"))
    waiting = _waiting(request)
    # SIGKILL the worker and its scheduler process: the lock stays in Redis (61 s TTL).
    workers.kill_worker(0)
    killed_at = timezone.now()
    assert waiting.waiting_until > killed_at, "the retry was due before the kill"
    assert redis_conn.get(LOCK) is not None

    workers.start(1)
    (done,) = wait_for_all([request], timeout=RQ_RETRY_S / 2)

    assert done.status == Status.SUCCEEDED, workers.output()[-3000:]
    retry = done.attempts.order_by("number").last()
    late = (retry.started - waiting.waiting_until).total_seconds()
    # Generous for a busy machine (the restart itself takes seconds), far below RQ's 600.
    assert late < RQ_RETRY_S / 3, f"the retry ran {late:.0f} s after its time"
    assert "scheduler lock of queue default released" in workers.output()


def test_it_moves_a_scheduled_job_that_no_scheduler_moved_in_time(
    settings, redis_conn, sandbox_settings, alice, team
):
    # No worker, so no scheduler: two requests whose retries were due, one long ago.
    first, second = (submit(alice, team, Submission(prompt=p))[0] for p in ("a fox", "a hen"))
    rq_queue = queue.get_queue()
    rq_queue.empty()
    now = timezone.now()
    overdue = now - timedelta(seconds=settings.RECONCILE_OVERDUE_SECONDS + 60)
    just_due = now - timedelta(seconds=1)
    for request, at in ((first, overdue), (second, just_due)):
        GenerationRequest.objects.filter(pk=request.pk).update(
            status=Status.WAITING, waiting_until=at
        )
        queue.enqueue(request, at=at)

    report = reconcile(now)

    assert report.overdue == 1
    assert rq_queue.job_ids == [queue.job_id(first.pk, first.step)]
    scheduled = rq_queue.scheduled_job_registry.get_job_ids()
    assert scheduled == [queue.job_id(second.pk, second.step)]
    # Run again: nothing moves twice.
    assert reconcile(now).overdue == 0


def test_it_requeues_a_request_whose_worker_died_between_starting_its_job_and_claiming_it(
    settings, redis_conn, sandbox_settings, alice, team
):
    (request,) = submit(alice, team, Submission(prompt="a fox"))
    job = queue.get_queue().fetch_job(queue.job_id(request.pk, request.step))
    # What a worker leaves when it is SIGKILLed right after taking the job: the job
    # "started" in Redis, the request still queued (its work horse never claimed it).
    long_ago = timezone.now() - timedelta(seconds=settings.RECONCILE_GRACE_SECONDS + 60)
    job.set_status("started")
    job.started_at = long_ago
    job.save()
    GenerationRequest.objects.filter(pk=request.pk).update(handed_over=long_ago)

    report = reconcile()

    assert report.requeued == 1
    row = GenerationRequest.objects.get(pk=request.pk)
    assert (row.status, row.step) == (Status.QUEUED, request.step + 1)
    assert queue.job_id(row.pk, row.step) in queue.get_queue().job_ids


# HERE: this host and this test process (resolved in the test, so that the test ids are
# the same in every pytest-xdist worker).
HERE = "here"


@pytest.mark.parametrize(
    ("host", "pid", "beat_s_ago", "released"),
    [
        ("another-host", 1, 60, True),  # silent for a minute: dead wherever it runs
        ("another-host", 1, 2, False),  # beating: alive, though its pid is not ours to see
        (HERE, HERE, 2, False),  # a live process here, beating
        (HERE, HERE, 60, True),  # alive here but stuck: silent
    ],
)
def test_it_releases_only_the_lock_of_a_scheduler_that_is_dead(
    redis_conn, settings, host, pid, beat_s_ago, released
):
    if host == HERE:
        host, pid = socket.gethostname(), os.getpid()
    beat = timezone.now() - timedelta(seconds=beat_s_ago)
    redis_conn.set(LOCK, "old-scheduler", ex=61)
    redis_conn.hset(
        SCHEDULER_KEY_TEMPLATE % "old-scheduler",
        mapping={"hostname": host, "pid": str(pid), "last_heartbeat": utcformat(beat)},
    )

    freed = release_stale_locks(redis_conn, [queue.QUEUE], settings.SCHEDULER_STALE_SECONDS)

    assert (freed == [queue.QUEUE]) is released
    assert (redis_conn.get(LOCK) is None) is released


def test_it_releases_the_lock_of_a_dead_process_on_this_host_at_once(redis_conn, settings):
    dead = subprocess.Popen(["true"])
    dead.wait()
    redis_conn.set(LOCK, "old-scheduler", ex=61)
    redis_conn.hset(
        SCHEDULER_KEY_TEMPLATE % "old-scheduler",
        mapping={
            "hostname": socket.gethostname(),
            "pid": str(dead.pid),
            "last_heartbeat": utcformat(timezone.now()),
        },
    )
    assert release_stale_locks(redis_conn, [queue.QUEUE], 20) == [queue.QUEUE]
