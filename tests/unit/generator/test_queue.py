"""Handing a committed step to RQ: a Redis blip is tried again, a Redis that stays away
leaves the step to the reconciler instead of failing the caller."""

import pytest
import redis

from generator import queue


class FlakyQueue:
    """Refuses the first `failures` enqueues the way redis-py does when Redis restarts."""

    def __init__(self, failures: int):
        self.failures = failures
        self.jobs = []

    def enqueue(self, func, *args, **options):
        if self.failures:
            self.failures -= 1
            raise redis.exceptions.ConnectionError("Connection refused")
        self.jobs.append((func, args, options["job_id"]))
        return self.jobs[-1]


@pytest.fixture
def flaky(monkeypatch):
    monkeypatch.setattr(queue._enqueue.retry, "sleep", lambda seconds: None)

    def install(failures):
        fake = FlakyQueue(failures)
        monkeypatch.setattr(queue, "get_queue", lambda: fake)
        return fake

    return install


@pytest.fixture
def request_row(alice, team):
    from generator.admission import Submission, submit

    (row,) = submit(alice, team, Submission(prompt="a lighthouse"))
    return row


def test_it_queues_the_step_through_a_redis_blip(flaky, request_row):
    fake = flaky(failures=2)
    assert queue.enqueue(request_row) is not None
    assert fake.jobs == [(queue.JOB, (str(request_row.id), 1), f"req-{request_row.id}-1")]


def test_it_leaves_the_step_to_the_reconciler_when_redis_stays_away(flaky, request_row, caplog):
    fake = flaky(failures=100)
    assert queue.enqueue(request_row) is None
    assert fake.jobs == [] and fake.failures == 95  # five tries, then it gave up
    assert "the reconciler will queue it" in caplog.text


class RecordingQueue:
    def __init__(self):
        self.options = []

    def enqueue(self, func, *args, **options):
        self.options.append(options)
        return options


def test_it_a_started_requests_next_step_goes_to_the_front_of_the_queue(monkeypatch, request_row):
    fake = RecordingQueue()
    monkeypatch.setattr(queue, "get_queue", lambda: fake)
    queue.enqueue(request_row)  # its first step: behind the requests already waiting
    request_row.step = 2  # a retry or a downgrade: before new requests
    queue.enqueue(request_row)
    assert [o["at_front"] for o in fake.options] == [False, True]
