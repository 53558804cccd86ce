"""The worker's RQ bookkeeping in fewer Redis round trips (generator/worker.py): jobs
run and finish as under RQ's own worker, for fewer commands."""

import pytest
from django.db import close_old_connections
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

from generator.worker import StepWorker


class PlainWorker(SimpleWorker):
    """RQ's in-process worker as it comes, with the step worker's connection handling."""

    def execute_job(self, job, queue):
        close_old_connections()
        super().execute_job(job, queue)


def run_jobs(worker_class, conn, n: int) -> tuple[int, list[Job]]:
    """(Redis commands the worker sent, the jobs) for n jobs run in burst mode."""
    queue = Queue("default", connection=conn)
    jobs = [queue.enqueue("operator.is_", str(i), 1, job_id=f"j-{i}") for i in range(n)]
    worker = worker_class([queue], connection=conn, name=f"{worker_class.__name__}-test")
    before = int(conn.info("stats")["total_commands_processed"])
    worker.work(burst=True)
    sent = int(conn.info("stats")["total_commands_processed"]) - before
    for job in jobs:
        job.refresh()
    return sent, jobs


@pytest.mark.django_db
def test_it_runs_jobs_as_rq_does_with_fewer_redis_commands(redis_conn):
    plain, plain_jobs = run_jobs(PlainWorker, redis_conn, 20)
    redis_conn.flushdb()
    ours, our_jobs = run_jobs(StepWorker, redis_conn, 20)
    assert [j.get_status() for j in our_jobs] == [JobStatus.FINISHED] * 20
    assert [j.return_value() for j in our_jobs] == [j.return_value() for j in plain_jobs]
    # RQ sends its worker heartbeat (three commands) before and after every dequeue and
    # after every job, and writes the same state twice: here a second apart at most.
    assert ours < plain * 0.8
