"""The reconciler: the database is the source of truth, Redis is not.

Run periodically (config/cron.py) and by `manage.py reconcile`. It finds requests that
would otherwise never finish and hands them back to the queue:
- running requests whose lease expired (their worker died mid-call: SIGKILL, OOM, a
  machine lost);
- queued or waiting requests whose RQ job is gone (Redis restarted or flushed) or ended
  without moving the request on, or started by a worker that died before claiming it;
- scheduled jobs (delayed retries) overdue by more than RECONCILE_OVERDUE_SECONDS: no
  RQ scheduler ran (generator/scheduling.py); they go to their queue now;
and settles quota left reserved on finished requests. Every change is a filtered UPDATE
on the state it saw, so it is safe to run on several machines at once and alongside the
workers.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from generator import queue, scheduling
from generator.models import CALLS_HOLDER, Expect, GenerationRequest, QuotaState, Status

log = logging.getLogger("steadyshot.reconcile")

# A job in one of these states will never run the step again.
_DEAD = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED}


@dataclass
class Report:
    recovered: int = 0  # taken back from dead workers
    requeued: int = 0  # jobs that had vanished from Redis
    overdue: int = 0  # scheduled jobs no scheduler moved in time
    failed: int = 0  # gave up after too many recoveries
    settled: int = 0  # quota charged or refunded late

    def __str__(self):
        return (
            f"recovered {self.recovered}, re-queued {self.requeued}, "
            f"overdue moved {self.overdue}, "
            f"failed {self.failed}, quota settled {self.settled}"
        )


def reconcile(now=None) -> Report:
    now = now or timezone.now()
    report = Report()
    _recover_expired_leases(now, report)
    _requeue_lost_jobs(now, report)
    report.overdue = scheduling.enqueue_overdue(
        queue.get_queue().connection,
        [queue.QUEUE, "maintenance"],
        settings.RECONCILE_OVERDUE_SECONDS,
        now,
    )
    _settle_quota(report)
    if report.recovered or report.requeued or report.overdue or report.failed or report.settled:
        log.warning("reconcile: %s", report)
    return report


def _recover_expired_leases(now, report):
    expired = GenerationRequest.objects.filter(status=Status.RUNNING, lease_until__lt=now)
    for request in expired:
        seen = Expect.seen(Status.RUNNING, request.step)
        if request.recoveries >= settings.MAX_RECOVERIES:
            if request.finish(
                Status.FAILED,
                seen,
                error_code="worker_lost",
                error_message=(
                    "The workers processing this request stopped several times in a row. "
                    "The operators have been told; submit it again later."
                ),
            ):
                report.failed += 1
            continue
        # A call that no caller took within its lease (none running, or all restarting)
        # was never made: it goes round again without counting as a worker lost.
        lost = int(request.claimed_by != CALLS_HOLDER)
        if request.hand_over(
            seen,
            model=request.current_model,
            reason="Recovered after its worker stopped; trying again.",
            recoveries=F("recoveries") + lost,
            handed_over=now,
        ):
            report.recovered += 1


def _job_is_lost(request, connection, old) -> bool:
    try:
        job = Job.fetch(queue.job_id(request.id, request.step), connection=connection)
    except NoSuchJobError:
        return True
    status = job.get_status(refresh=False)
    if status in _DEAD:
        return True
    # Started by a worker that died (SIGKILL) before it claimed the request:
    # a worker claims within a second of the start, so a request still queued at that
    # step long after its job started will never be claimed by it, and RQ marks such a
    # job failed only in its maintenance, up to 10 minutes later.
    return (
        status == JobStatus.STARTED
        and request.status == Status.QUEUED
        and job.started_at is not None
        and job.started_at.timestamp() < old.timestamp()
    )


def _requeue_lost_jobs(now, report):
    connection = queue.get_queue().connection
    old = now - timedelta(seconds=settings.RECONCILE_GRACE_SECONDS)
    waiting = GenerationRequest.objects.filter(
        status__in=[Status.QUEUED, Status.WAITING], handed_over__lt=old
    )
    for request in waiting:
        if not _job_is_lost(request, connection, old):
            continue
        # A wait that has not run out yet stays a wait; an overdue one runs now.
        at = request.waiting_until
        if request.status != Status.WAITING or at is None or at <= now:
            at = None
        if request.hand_over(
            Expect.seen(request.status, request.step),
            model=request.current_model,
            reason=request.status_reason,
            at=at,
            handed_over=now,
        ):
            report.requeued += 1


def _settle_quota(report):
    """A finished request whose quota is still reserved: ended without its settlement
    (finish() settles in the UPDATE and transaction that end a request, so only a
    request ended by older code or by hand is left so). Charge or refund it now; both
    are exactly-once."""
    pending = GenerationRequest.objects.filter(
        status__in=[Status.SUCCEEDED, Status.FAILED, Status.CANCELED],
        quota_state=QuotaState.RESERVED,
    )
    for request in pending:
        report.settled += int(request.settle_quota())
