"""The worker's RQ bookkeeping in fewer Redis round trips (generator/worker.py): jobs
run and finish as under RQ's own worker, for fewer commands."""

import pytest
import redis
from django.db import close_old_connections
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

from generator.worker import StepWorker


class PlainWorker(SimpleWorker):
    """RQ's in-process worker as it comes, with the step worker's connection handling."""

    def execute_job(self, job, queue):
        close_old_connections()
        super().execute_job(job, queue)


class CountingPacker:
    """Counts the commands packed for the wire, alone or in a pipeline."""

    def __init__(self, packer, sent: list[int]):
        self.packer, self.sent = packer, sent

    def pack(self, *args):
        self.sent[0] += 1
        return self.packer.pack(*args)


def counting_client(url: str) -> tuple[redis.Redis, list[int]]:
    """A client that counts what it sends: the server's own total would count the
    commands of every other client of the same server too (a parallel test process)."""
    sent = [0]
    plain = redis.ConnectionPool.from_url(url)  # TCP or unix socket, as the URL says

    class Connection(plain.connection_class):
        def _construct_command_packer(self, packer):
            return CountingPacker(super()._construct_command_packer(packer), sent)

    pool = redis.ConnectionPool(connection_class=Connection, **plain.connection_kwargs)
    return redis.Redis(connection_pool=pool), sent


def run_jobs(worker_class, url: str, n: int) -> tuple[int, list[Job]]:
    """(Redis commands the worker sent, the jobs) for n jobs run in burst mode."""
    conn, sent = counting_client(url)
    queue = Queue("default", connection=conn)
    jobs = [queue.enqueue("operator.is_", str(i), 1, job_id=f"j-{i}") for i in range(n)]
    worker = worker_class([queue], connection=conn, name=f"{worker_class.__name__}-test")
    before = sent[0]
    worker.work(burst=True)
    sent = sent[0] - before
    for job in jobs:
        job.refresh()
    return sent, jobs


@pytest.mark.django_db
def test_it_runs_jobs_as_rq_does_with_fewer_redis_commands(redis_conn, redis_url):
    plain, plain_jobs = run_jobs(PlainWorker, redis_url, 20)
    redis_conn.flushdb()
    ours, our_jobs = run_jobs(StepWorker, redis_url, 20)
    assert [j.get_status() for j in our_jobs] == [JobStatus.FINISHED] * 20
    assert [j.return_value() for j in our_jobs] == [j.return_value() for j in plain_jobs]
    # RQ sends its worker heartbeat (three commands) before and after every dequeue and
    # after every job, and writes the same state twice: here a second apart at most.
    assert ours < plain * 0.8


def test_it_retires_the_dead_workers_a_restarted_one_replaces(redis_conn):
    queue = Queue("default", connection=redis_conn)
    # What a worker killed by SIGKILL leaves: its registration, until the key expires.
    for name in ("box-7-1", "box-7-1+1", "box-7-2", "box-7-10"):
        PlainWorker([queue], connection=redis_conn, name=name).register_birth()

    StepWorker([queue], connection=redis_conn, name="box-7-1+2").register_birth()

    names = sorted(w.name for w in StepWorker.all(connection=redis_conn))
    assert names == ["box-7-1+2", "box-7-10", "box-7-2"]
    assert StepWorker.count(queue=queue) == 3
