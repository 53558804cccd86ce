"""Fixtures of both tiers: the people of every test (alice owns a team, bob is a member
of it, charlie is an outsider with a team of his own, staff operates the site).

tests/unit runs in-process only (SQLite, the memory store, no Redis, no subprocess);
tests/integration starts real services (Redis, the sandbox, RQ workers, chromium) in
its own conftest."""

import pytest
from django.core.cache import caches

from accounts.models import Membership, Team, User

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # PBKDF2's deliberate slowness protects real passwords; tests only need a hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _throttles_per_test(settings):
    # The throttles count in Redis (accounts/throttle.py); in-process, every test starts
    # from zero in the local memory cache instead (the unit tier clears it). The tests of
    # the throttles on Redis point them back at it (tests/integration/test_throttles.py).
    settings.RATELIMIT_USE_CACHE = "default"
    caches["default"].clear()


def _user(email: str, name: str) -> User:
    return User.objects.create_user(email, PASSWORD, name=name)


@pytest.fixture
def alice(db) -> User:
    user = _user("alice@example.com", "Alice")
    user.switch_team(Team.create_with_owner("Acme", user))
    return user


@pytest.fixture
def team(alice) -> Team:
    return alice.active_team


@pytest.fixture
def bob(team) -> User:
    user = _user("bob@example.com", "Bob")
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    user.switch_team(team)
    return user


@pytest.fixture
def charlie(db) -> User:
    user = _user("charlie@example.com", "Charlie")
    user.switch_team(Team.create_with_owner("Outsiders", user))
    return user


@pytest.fixture
def staff(db) -> User:
    user = User.objects.create_user("staff@example.com", PASSWORD, name="Operator", is_staff=True)
    user.switch_team(Team.create_with_owner("Ops", user))
    return user


@pytest.fixture
def client_for(client):
    """client_for(user): the test client logged in as that user."""

    def log_in(user):
        client.force_login(user)
        return client

    return log_in
