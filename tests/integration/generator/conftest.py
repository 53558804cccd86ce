"""Fixtures of the API tests."""

import pytest

from accounts.models import ApiToken


@pytest.fixture
def token(alice, redis_conn) -> str:
    """Alice's API token, as she would send it: `Authorization: Bearer <token>`."""
    _, raw = ApiToken.issue(alice, "ci")
    return raw
