"""The breaker and limiter tests of the unit tier, run again against real Redis: the Lua
scripts and their in-memory twins must behave the same."""

import pytest

from generator.resilience.clock import VirtualClock
from generator.resilience.stores import RedisStore


@pytest.fixture
def store(redis_conn):
    return RedisStore(redis_conn)


@pytest.fixture
def clock():
    return VirtualClock()
