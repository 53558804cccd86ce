"""Handing requests to the RQ workers. Jobs carry ids and the step they were enqueued
for, never model instances (see GenerationRequest.step)."""

from datetime import datetime

import django_rq

JOB = "generator.jobs.advance"
QUEUE = "default"


def get_queue():
    return django_rq.get_queue(QUEUE)


def enqueue(request_id, step: int, *, at: datetime | None = None):
    """Queue the request's next step now, or at `at` (the worker's scheduler moves it to
    the queue then; workers never sleep through a backoff)."""
    queue = get_queue()
    args = (str(request_id), step)
    job_id = f"req-{request_id}-{step}"
    if at is not None:
        return queue.enqueue_at(at, JOB, *args, job_id=job_id)
    return queue.enqueue(JOB, *args, job_id=job_id)
