"""Fixtures of both tiers: the people of every test (alice owns a team, bob is a member
of it, charlie is an outsider with a team of his own, staff operates the site).

tests/unit runs in-process only (SQLite, the memory store, no Redis, no subprocess);
tests/integration starts real services (Redis, the sandbox, RQ workers, chromium) in
its own conftest."""

import os
import time
import warnings
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from django.core.cache import caches
from django.db import connection

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


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's, and at the end of the run, before it drops the test database, the
    other sessions in it ended (end_sessions_left()): one left would make the drop fail."""
    yield
    with django_db_blocker.unblock():
        left = end_sessions_left()
    if left:
        warnings.warn(f"Database sessions left at the end, terminated: {left}", stacklevel=1)


def end_sessions_left(timeout: float = 10.0) -> list[str]:
    """Wait for every other session in the test database to end (a process the tests
    killed loses its session a moment after it dies), then terminate those still there.
    Returns their application names: processes that no fixture stopped."""
    if connection.vendor != "postgresql":
        return []
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute(f"SELECT application_name {others}")
            left = [name for (name,) in cursor.fetchall()]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if left:
            cursor.execute(f"SELECT pg_terminate_backend(pid) {others}")
    return left


def pytest_configure(config):
    """Under pytest-xdist (`-n N`), each worker process gets its own Redis database: the
    integration tests flush theirs (tests/integration/conftest.py's redis_conn). Its own
    Postgres test database comes from pytest-django (the _gw<N> suffix), its own sandbox,
    SeaweedFS, live server and chromium from the session fixtures, its ports free ones."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or not os.environ.get("REDIS_URL"):
        return  # one process; or each worker starts a private redis-server of its own
    from django.test import override_settings

    url = redis_url_of_worker(os.environ["REDIS_URL"], int(worker.removeprefix("gw")))
    os.environ["REDIS_URL"] = url  # the workers, web servers and sandboxes tests start
    override_settings(
        REDIS_URL=url,
        RQ_QUEUES={name: {**queue, "URL": url} for name, queue in settings_of("RQ_QUEUES")},
        CACHES={
            **dict(settings_of("CACHES")),
            "throttle": {**dict(settings_of("CACHES"))["throttle"], "LOCATION": url},
        },
    ).enable()


def pytest_collection_modifyitems(items):
    """Under pytest-xdist, the long tests (marked slow or browser) go first, so that
    they spread over the workers and the short ones fill the gaps, instead of ending the
    run on one worker. pytest-django has already put the tests that keep their database
    changes to themselves before those that commit (and truncate after): that order
    stays, only the long tests that need no database at all move to the very front."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item) -> int:
        long = bool(item.get_closest_marker("slow") or item.get_closest_marker("browser"))
        marker = item.get_closest_marker("django_db")
        fixtures = getattr(item, "fixturenames", ())
        committing = bool(
            marker and (marker.kwargs.get("transaction") or marker.args[:1] == (True,))
        )
        committing = committing or "transactional_db" in fixtures or "live_server" in fixtures
        uses_db = bool(marker) or "db" in fixtures or committing
        if not uses_db:
            return 0 if long else 4
        if not committing:
            return 1
        return 2 if long else 3

    items.sort(key=rank)


def settings_of(name: str):
    from django.conf import settings

    return getattr(settings, name).items()


def redis_url_of_worker(url: str, n: int) -> str:
    """`url` with its database number moved up by n: gw0 keeps REDIS_URL's database,
    gw1 takes the next one, and so on (Redis has 16 unless configured otherwise)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if "db" in query or parts.scheme == "unix":
        query["db"] = str(int(query.get("db", 0)) + n)
        return url.split("?", 1)[0] + "?" + urlencode(query)
    return urlunsplit(parts._replace(path=f"/{int(parts.path.strip('/') or 0) + n}"))


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
