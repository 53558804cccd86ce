"""`make run`'s supervisor brings the whole product up and takes it down cleanly."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "config.up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _whole_product_env(tmp_path, port: int) -> dict:
    """make run's environment for everything on SQLite and its own Redis in tmp_path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(VAR_DIR=str(tmp_path), PORT=str(port), WORKERS="1", WEB_PROCESSES="1")
    return env


def test_it_starts_a_local_s3_server_and_keeps_images_in_its_bucket(tmp_path):
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "STORAGE_URL"}
    }
    env.update(
        VAR_DIR=str(tmp_path),
        PORT=str(port),
        STORAGE="s3-local",
        ROLES="web,redis,sandbox",
        WEB_PROCESSES="1",
    )
    process = _up(env)
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        shared = dict(
            line.split("=", 1) for line in (tmp_path / "services.env").read_text().splitlines()
        )
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=90)

    assert ready is not None and ready.json() == {"status": "ready"}, output
    assert shared["STORAGE_URL"] == "s3://steadyshot"
    assert shared["AWS_S3_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert "s3 | S3 (SeaweedFS) listening on" in output
    # Only the roles asked for: no workers, no cron.
    assert "worker1 |" not in output and "cron |" not in output


def _wait_healthy(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "make run exited before it was up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the site did not come up within {timeout:.0f} s")


def _submit_through_api(env: dict, port: int) -> httpx.Response:
    """A token for the demo account (issued in the running instance's database), then a
    submission through the JSON API."""
    issued = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from accounts.models import ApiToken, User;"
         "print(ApiToken.issue(User.objects.get(email='demo@steadyshot.local'), 't')[1])"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = issued.stdout.strip().splitlines()[-1]
    return httpx.post(
        f"http://127.0.0.1:{port}/api/v1/generations",
        json={"prompt": "a lighthouse at dusk"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_it_starts_everything_refuses_a_second_start_restarts_a_dead_worker_and_stops(
    tmp_path,
):
    # One whole product for both checks: starting it is most of the time of each.
    port = _free_port()
    env = _whole_product_env(tmp_path, port)
    first = _up(env)
    try:
        _wait_healthy(port, first)

        login = httpx.get(f"http://127.0.0.1:{port}/login/", timeout=5)
        assert login.status_code == 200 and "Log in" in login.text
        # Served as deployed, DEBUG off (issue 13, item 12): our own 404, no URL list,
        # and the stylesheet (hashed by collectstatic) still served by WhiteNoise.
        missing = httpx.get(f"http://127.0.0.1:{port}/no/such/page/", timeout=5)
        assert missing.status_code == 404 and "There is nothing here" in missing.text
        assert "URLconf" not in missing.text
        (stylesheet,) = re.findall(r'href="(/static/css/app\.[0-9a-f]{12}\.css)"', login.text)
        assert httpx.get(f"http://127.0.0.1:{port}{stylesheet}", timeout=5).status_code == 200
        email, password = (tmp_path / "demo-credentials.txt").read_text().split()
        assert email == "demo@steadyshot.local" and len(password) >= 12
        assert (tmp_path / "redis" / "redis.sock").exists()
        socket_before = (tmp_path / "redis" / "redis.sock").stat().st_ino

        # A second start in the same checkout refuses and starts nothing.
        second = subprocess.run(
            [sys.executable, "-m", "config.up"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

        assert second.returncode == 3, second.stdout + second.stderr
        assert "already running" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert f"http://127.0.0.1:{port}/" in second.stderr
        assert "redis |" not in second.stdout  # it started nothing
        # The first instance is untouched: same Redis socket, and it still accepts work.
        assert (tmp_path / "redis" / "redis.sock").stat().st_ino == socket_before
        assert first.poll() is None
        assert _submit_through_api(env, port).status_code == 202

        # A worker killed outright (the OOM killer, say) is started again.
        killed = _worker_pids(first.pid)
        assert len(killed) == 1
        os.kill(killed[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not (_worker_pids(first.pid) and _worker_pids(first.pid) != killed):
            assert time.monotonic() < deadline, "the killed worker was not started again"
            time.sleep(0.2)
        assert first.poll() is None  # the rest of the product went on
        # Under a new name (RQ keeps the dead one's registered for minutes): it is
        # listening on the queues once it registered.
        from redis import Redis
        from rq import Worker

        conn = Redis(unix_socket_path=str(tmp_path / "redis" / "redis.sock"))
        deadline = time.monotonic() + 60
        while not any(w.name.endswith("+1") for w in Worker.all(connection=conn)):
            assert time.monotonic() < deadline, "the restarted worker did not register"
            time.sleep(0.2)
        conn.close()
    finally:
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=60)

    assert first.returncode == 0, output
    assert f"Demo account created: {email} / {password}" in output
    assert "worker1 | exited with code -9; restarting in 1 s" in output
    assert output.count("Listening on maintenance, default") == 2
    assert "caller1 |" in output and "taking calls, at most 256 at once" in output
    assert "sandbox | Sandbox listening on http://127.0.0.1:" in output
    # Every child is gone: nothing listens on the port or the socket any more.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    assert not (tmp_path / "redis" / "redis.sock").exists()


def _worker_pids(up_pid: int) -> list[int]:
    """The RQ workers that make run (pid `up_pid`) started itself (not their scheduler's
    forks)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == up_pid and b"rqworker" in cmdline:
            pids.append(int(proc.name))
    return pids
