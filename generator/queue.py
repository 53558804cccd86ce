"""Handing requests to the RQ workers. Jobs carry the request id and the step they were
enqueued for, never model instances (see GenerationRequest.step)."""

from datetime import datetime

import django_rq
from django.conf import settings
from rq import RateLimit

JOB = "generator.jobs.advance"
QUEUE = "default"


def get_queue():
    return django_rq.get_queue(QUEUE)


def job_id(request_id, step: int) -> str:
    return f"req-{request_id}-{step}"


def enqueue(request, *, at: datetime | None = None):
    """Queue the request's current step now, or at `at` (the workers' scheduler moves it
    to the queue then: workers never sleep through a backoff).

    Per-team fairness: at most TEAM_CONCURRENCY jobs of one team are queued or running at
    once (RQ's RateLimit holds the rest back in Redis), so one team's burst of 100
    requests cannot take every worker from the others.
    """
    queue = get_queue()
    options = {
        "job_id": job_id(request.id, request.step),
        "job_timeout": settings.JOB_TIMEOUT_SECONDS,
        # A job's record is only needed while it runs; the database keeps the history.
        "result_ttl": 600,
        "failure_ttl": 7 * 24 * 3600,
        "rate_limit": RateLimit(
            key=f"team-{request.team_id}", concurrency=settings.TEAM_CONCURRENCY
        ),
    }
    args = (str(request.id), request.step)
    if at is not None:
        return queue.enqueue_at(at, JOB, *args, **options)
    return queue.enqueue(JOB, *args, **options)
