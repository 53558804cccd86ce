"""Handing requests to the RQ workers. Jobs carry the request id and the step they were
enqueued for, never model instances (see GenerationRequest.step): `advance`, one job a
step (a step that calls a model is ended by the caller that makes the call,
generator/caller, without a job of its own)."""

import logging
from datetime import datetime

import django_rq
import redis
from django.conf import settings
from rq import RateLimit
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

log = logging.getLogger("steadyshot.queue")

JOB = "generator.jobs.advance"
QUEUE = "default"


# One Redis client (its connection pool) per URL and process. django_rq builds a new
# client, so a new connection and its handshake, at every get_queue(): 2-4 ms on every
# submission's answer on a quiet machine, tens under load (docs/benchmarks.md, "Submit
# latency"). redis-py's pool is thread-safe and starts afresh in a forked child.
_clients: dict[str, redis.Redis] = {}


def get_queue():
    url = settings.RQ_QUEUES[QUEUE]["URL"]
    client = _clients.get(url)
    if client is None:
        client = _clients.setdefault(url, django_rq.get_connection(QUEUE))
    return django_rq.get_queue(QUEUE, connection=client)


def job_id(request_id, step: int) -> str:
    return f"req-{request_id}-{step}"


def enqueue(request, *, at: datetime | None = None):
    """Queue the request's current step now, or at `at` (the workers' scheduler moves it
    to the queue then: workers never sleep through a backoff).

    Called after the database committed the step. A Redis blip (a failover, a restart)
    is tried again for about two seconds; if Redis stays away the step is left to the
    reconciler, which enqueues every queued request whose job is missing, so the caller
    (a web request, a worker) never fails on it. Returns the job, or None then.
    """
    try:
        return _enqueue(request, at)
    except redis.exceptions.RedisError:
        log.exception(
            "request=%s step=%s could not be queued; the reconciler will queue it",
            request.id,
            request.step,
        )
        return None


_redis_blips = retry(
    retry=retry_if_exception_type(
        (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    ),
    stop=stop_after_attempt(5),
    wait=wait_exponential_jitter(initial=0.1, max=1.0),
    reraise=True,
)


@_redis_blips
def _enqueue(request, at: datetime | None):
    """Per-team fairness: at most TEAM_CONCURRENCY jobs of one team are queued or running at
    once (RQ's RateLimit holds the rest back in Redis), so one team's burst of 100
    requests cannot take every worker from the others.

    A request that has started (every step after its first: a retry, a downgrade, a
    booked slot coming due) goes to the front of the queue: when the workers are all
    busy, finishing what was started keeps each request to one queue wait instead of
    one per step, and a new request that waits instead spends its wait limit for Pro in
    the queue and falls back to the faster model, which drains the queue
    (docs/benchmarks.md measures both).
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
        "at_front": request.step > 1,
    }
    args = (str(request.id), request.step)
    if at is not None:
        return queue.enqueue_at(at, JOB, *args, **options)
    return queue.enqueue(JOB, *args, **options)
