"""tests/unit/resilience/test_limiter.py against the Redis store (conftest.py)."""

from tests.unit.resilience.test_limiter import *  # noqa: F403
