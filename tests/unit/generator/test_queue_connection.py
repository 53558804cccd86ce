"""Enqueueing reuses one Redis connection pool per process instead of connecting anew at
every submission (issue 17: the connection and its handshake cost milliseconds a submission)."""

from generator import queue


def test_it_enqueues_every_step_over_one_connection_pool():
    first, second = queue.get_queue(), queue.get_queue()
    assert first.connection is second.connection
    assert first.name == second.name == queue.QUEUE


def test_it_follows_a_change_of_the_queues_redis_url(settings):
    before = queue.get_queue().connection
    other = "redis://127.0.0.1:9/1"
    settings.RQ_QUEUES = {**settings.RQ_QUEUES, queue.QUEUE: {"URL": other}}
    after = queue.get_queue().connection
    assert after is not before
    assert after.connection_pool.connection_kwargs["db"] == 1
