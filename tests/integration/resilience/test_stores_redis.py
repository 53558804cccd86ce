"""tests/unit/resilience/test_stores.py against the Redis store (conftest.py), and what
only Redis does: forget its scripts."""

from tests.unit.resilience.test_stores import *  # noqa: F403
from tests.unit.resilience.test_stores import COUNT


def test_it_runs_a_script_redis_forgot_once_and_only_once(store, redis_conn):
    assert store.batch([("run", COUNT, ["count"], [1])]) == [1]
    redis_conn.script_flush()  # a Redis restarted since this process loaded its scripts
    answers = store.batch([("run", COUNT, ["count"], [2]), ("get_float", "count", 0.0)])
    assert answers == [3, 1.0]  # the script ran again after the rest, once
    assert store.batch([("run", COUNT, ["count"], [4])]) == [7]
