"""tests/unit/resilience/test_health.py against the Redis store (conftest.py)."""

from tests.unit.resilience.test_health import *  # noqa: F403
