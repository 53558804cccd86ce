"""The web server as `make run` starts it (config.up.web_command: gunicorn with uvicorn
workers serving config.asgi), against the test database, Redis and sandbox, for tests
that must go through the real server: the official SDKs, the async endpoint's waits."""

import socket
import subprocess
import time

import httpx
import pytest

from config.up import web_command
from tests.integration.support.processes import kill_tree
from tests.integration.support.workers import ROOT


class WebServer:
    def __init__(self, url: str, process: subprocess.Popen, log):
        self.url = url
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start_web(workers, tmp_path):
    """start_web(**env): one web process on a free loopback port, with the workers
    fixture's environment (test database, Redis, sandbox, TIME_SCALE) and `env` on top;
    stopped at the end. Tests using it need django_db(transaction=True), so that the
    server sees their rows."""
    servers = []

    def start(**extra) -> WebServer:
        port = str(_free_port())
        env = {**workers.env, "WEB_PROCESSES": "1", **extra}
        log = tmp_path / f"web{len(servers) + 1}.log"
        with log.open("w") as handle:
            process = subprocess.Popen(
                web_command(env, "127.0.0.1", port),
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        server = WebServer(f"http://127.0.0.1:{port}", process, log)
        servers.append(server)
        _wait_until_up(server)
        return server

    yield start
    # SIGKILL, with the master's worker processes: the test is over, a graceful stop
    # would only cost seconds. (The workers fixture, stopped next, waits for the end of
    # their database sessions too.)
    for server in servers:
        kill_tree(server.process)


def _wait_until_up(server: WebServer, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail("the web server exited:\n" + server.output())
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"the web server did not answer within {timeout:.0f} s:\n" + server.output())
