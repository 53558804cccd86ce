"""Fixtures that start the sandbox upstream server for tests.

`sandbox` (session): the real server, `manage.py sandbox --port 0` in its own process,
as `make run` starts it. `sandbox_settings` (function): points the app at it (sandbox
mode, no Gemini key), resets it to `calm` and sets TIME_SCALE to 0.01 (a 30 s Pro call
takes 0.3 s); a test that wants another scale sets settings.TIME_SCALE and calls
`reset()` again, so the app's policy and the sandbox share one clock.
"""

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.integration.support.processes import stop

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TEST_SCALE = 0.01


class SandboxHandle:
    """The admin side of a running sandbox (its /_sandbox/ endpoints)."""

    def __init__(self, url: str, settings=None):
        self.url = url
        self._settings = settings

    def _post(self, path: str, payload: dict) -> dict:
        response = httpx.post(f"{self.url}/_sandbox/{path}", json=payload, timeout=10)
        response.raise_for_status()
        return response.json()

    def _get(self, path: str):
        response = httpx.get(f"{self.url}/_sandbox/{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def reset(self) -> dict:
        """Calls forgotten, episodes and buckets back to the start, profile `calm`, and
        the time scale of the test's settings.TIME_SCALE."""
        self._post("reset", {})
        scale = self._settings.TIME_SCALE if self._settings is not None else 1.0
        return self.set_time_scale(scale)

    def set_profile(self, name: str, seed: int = 0) -> dict:
        return self._post("profile", {"name": name, "seed": seed})

    def set_time_scale(self, scale: float) -> dict:
        return self._post("time-scale", {"scale": scale})

    def set_relay_shape(self, shape: str) -> dict:
        """Where /v1/chat/completions puts its image: images, parts or markdown."""
        return self._post("relay-shape", {"shape": shape})

    def state(self) -> dict:
        return self._get("state")

    def calls(self) -> list[dict]:
        return self._get("calls")

    def batches(self) -> list[dict]:
        """Every Batch mode batch: name, model, display name, state, lines, keys."""
        return self._get("batches")


def start_sandbox(args: list[str], env: dict | None = None, timeout: float = 30.0):
    """(process, url) of `manage.py sandbox --port 0 ...`, once it listens."""
    env = {**os.environ, **(env or {}), "DJANGO_SETTINGS_MODULE": "config.settings"}
    env.pop("GEMINI_API_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    found = threading.Event()
    url = []
    output = []

    def pump():
        # Keep draining after the first line: a full pipe would block the server.
        for line in process.stdout:
            output.append(line)
            if line.startswith("Sandbox listening on ") and not url:
                url.append(line.split()[-1].strip())
                found.set()
        found.set()

    threading.Thread(target=pump, daemon=True).start()
    if not found.wait(timeout) or not url:
        process.kill()
        raise RuntimeError("The sandbox did not start:\n" + "".join(output))
    return process, url[0]


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("sandbox")
    process, url = start_sandbox([], env={"VAR_DIR": str(var_dir)})
    try:
        yield SandboxHandle(url)
    finally:
        stop(process)


@pytest.fixture
def sandbox_settings(sandbox, settings):
    settings.SANDBOX_URL = sandbox.url
    settings.UPSTREAM_SANDBOX = True
    settings.GEMINI_API_KEY = ""
    settings.TIME_SCALE = DEFAULT_TEST_SCALE
    handle = SandboxHandle(sandbox.url, settings)
    handle.reset()
    return handle
