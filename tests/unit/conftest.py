"""Unit tier: everything in this process. The memory store stands in for Redis, and the
queues point at a closed port so that a test that reaches Redis by mistake fails loudly
instead of quietly needing a server."""

import pytest

from generator.resilience.clock import VirtualClock
from generator.resilience.stores import MemoryStore

NO_REDIS = "redis://127.0.0.1:9/0"  # the discard port: connections are refused


@pytest.fixture(autouse=True)
def _no_redis(settings):
    from django.core.cache import cache

    # The pages that name the sandbox's profile ask it over HTTP: here it never answers.
    settings.SANDBOX_URL = "http://127.0.0.1:9"
    cache.clear()
    settings.REDIS_URL = NO_REDIS
    settings.RQ_QUEUES = {
        name: {"URL": NO_REDIS, "DEFAULT_TIMEOUT": 600} for name in ("maintenance", "default")
    }


@pytest.fixture
def store():
    """The shared store of the breaker and limiter tests (the integration tier runs the
    same tests against Redis: tests/integration/resilience)."""
    return MemoryStore()


@pytest.fixture
def clock():
    return VirtualClock()
