"""A store fixture that runs a test once against real Redis and once in memory: the two
implementations must behave the same."""

import pytest

from generator.resilience.clock import VirtualClock
from generator.resilience.stores import MemoryStore, RedisStore


@pytest.fixture(params=["redis", "memory"])
def store(request):
    if request.param == "memory":
        return MemoryStore()
    conn = request.getfixturevalue("redis_conn")
    return RedisStore(conn)


@pytest.fixture
def clock():
    return VirtualClock()
