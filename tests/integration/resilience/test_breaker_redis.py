"""tests/unit/resilience/test_breaker.py against the Redis store (conftest.py)."""

from tests.unit.resilience.test_breaker import *  # noqa: F403
