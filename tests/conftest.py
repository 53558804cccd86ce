"""Shared fixtures: the people of every test (alice owns a team, bob is a member of it,
charlie is an outsider with a team of his own) and real services (Redis)."""

import os
import subprocess
from pathlib import Path

import pytest

from accounts.models import Membership, Team, User

# Fixtures that start real services: the sandbox upstream and RQ workers.
pytest_plugins = ["tests.sandbox_fixtures", "tests.worker_fixtures"]

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # PBKDF2's deliberate slowness protects real passwords; tests only need a hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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


# --- Redis ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """REDIS_URL when set (CI points it at a scratch database, which the tests flush),
    otherwise a private redis-server on a unix socket for this test session."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from config.redis_server import redis_command, wait_for_socket

    directory: Path = tmp_path_factory.mktemp("redis")
    cmd, socket = redis_command(directory, persist=False)
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_socket(socket, process)
        yield f"unix://{socket}?db=0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_conn(redis_url, settings):
    """A clean Redis that the app's queues use too."""
    import redis

    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    settings.REDIS_URL = redis_url
    settings.RQ_QUEUES = {
        name: {"URL": redis_url, "DEFAULT_TIMEOUT": 600} for name in ("maintenance", "default")
    }
    yield conn
    conn.flushdb()
