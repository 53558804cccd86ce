"""The throttles count in Redis, so that every web process and host shares them, and let
requests through when Redis does not answer (accounts/throttle.py; issue 13, item 10).
The rules themselves are tested in-process: tests/unit/accounts/test_throttles.py."""

import pytest
from django.urls import reverse

from accounts.models import User
from tests.unit.accounts.test_auth import GOOD

pytestmark = pytest.mark.django_db


def _throttle_cache(settings, location: str) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "throttle": {**settings.CACHES["throttle"], "LOCATION": location},
    }
    settings.RATELIMIT_USE_CACHE = "throttle"


def test_it_keeps_the_counts_in_redis(client, redis_conn, redis_url, settings):
    _throttle_cache(settings, redis_url)
    settings.SIGNUP_RATE = "1/h"
    assert client.post(reverse("accounts:signup"), GOOD).status_code == 302
    client.logout()
    assert redis_conn.keys("throttle:*")  # visible to every process that shares Redis
    second = {**GOOD, "email": "eve@example.com"}
    assert client.post(reverse("accounts:signup"), second).status_code == 429


def test_it_lets_requests_through_when_redis_does_not_answer(client, settings):
    _throttle_cache(settings, "redis://127.0.0.1:9/0")
    settings.SIGNUP_RATE = "1/h"
    for email in ("dora@example.com", "eve@example.com"):
        assert client.post(reverse("accounts:signup"), {**GOOD, "email": email}).status_code == 302
        client.logout()
    assert User.objects.count() == 2
