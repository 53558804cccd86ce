"""Integration fixtures: real Redis, the sandbox upstream server and RQ workers, each a
separate process or server as in production."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.support.sandbox import sandbox, sandbox_settings  # noqa: F401
from tests.integration.support.storage import media_storage, seaweedfs  # noqa: F401
from tests.integration.support.web import start_web  # noqa: F401
from tests.integration.support.workers import workers  # noqa: F401


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
