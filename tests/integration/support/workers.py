"""Real RQ workers for integration tests: separate processes running
`manage.py rqworker --with-scheduler` against the test database, the test Redis and
the sandbox, exactly as in production, with a caller process (`manage.py caller`) that
makes their upstream calls."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.integration.support.processes import APP_NAME, kill_tree, wait_for_killed_sessions
from tests.integration.support.storage import storage_env

ROOT = Path(__file__).resolve().parents[3]


def database_url() -> str:
    """The URL of the database the tests use right now (pytest-django's test database)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] or ""
    if s["PASSWORD"]:
        auth += f":{s['PASSWORD']}"
    host = f"{auth}@" if auth else ""
    return f"postgres://{host}{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Workers:
    def __init__(self, env: dict):
        self.env = env
        self.processes: list[subprocess.Popen] = []
        self.callers: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, count: int = 1, log_dir: Path | None = None) -> None:
        """`count` workers, and a caller if none is running."""
        if not any(c.poll() is None for c in self.callers):
            self.start_caller(log_dir=log_dir)
        for _ in range(count):
            n = len(self.processes) + 1
            log_path = (log_dir or Path(self.env["VAR_DIR"])) / f"worker{n}.log"
            self.logs.append(log_path)
            handle = log_path.open("w")
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "manage.py",
                        "rqworker",
                        "--with-scheduler",
                        "--name",
                        f"test-{os.getpid()}-{n}-{time.monotonic_ns()}",
                        "maintenance",
                        "default",
                    ],
                    cwd=ROOT,
                    env=self.env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            )

    def start_caller(self, log_dir: Path | None = None, concurrency: int | None = None):
        """One `manage.py caller`, as `make run` starts it; returns its process."""
        n = len(self.callers) + 1
        log_path = (log_dir or Path(self.env["VAR_DIR"])) / f"caller{n}.log"
        self.logs.append(log_path)
        args = ["--concurrency", str(concurrency)] if concurrency else []
        process = subprocess.Popen(
            [sys.executable, "manage.py", "caller", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.callers.append(process)
        self.processes.append(process)
        return process

    def start_cron(self, log_dir: Path | None = None) -> None:
        """`manage.py rqcron config.cron`, as `make run` starts it: the periodic jobs
        (the batcher among them) go to the maintenance queue these workers serve."""
        log_path = (log_dir or Path(self.env["VAR_DIR"])) / "cron.log"
        self.logs.append(log_path)
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "rqcron", "config.cron"],
                cwd=ROOT,
                env=self.env,
                stdout=log_path.open("w"),
                stderr=subprocess.STDOUT,
            )
        )

    def kill(self, index: int) -> None:
        """SIGKILL: no warm shutdown, no chance to hand anything back."""
        kill_tree(self.processes[index])

    def kill_worker(self, n: int = 0) -> None:
        """SIGKILL the n-th RQ worker started (callers are not counted), with its
        scheduler child."""
        workers = [p for p in self.processes if p not in self.callers]
        self.kill(self.processes.index(workers[n]))

    def kill_holder(self, claimed_by: str) -> None:
        """SIGKILL the worker or caller that holds a request (`claimed_by` is the
        host:pid of the process running its step or making its call)."""
        pid = int(claimed_by.rsplit(":", 1)[1])
        for index, process in enumerate(self.processes):
            if process.poll() is None and process.pid == pid:
                self.kill(index)
                return
        raise AssertionError(f"no live worker or caller holds {claimed_by}")

    def kill_all(self) -> None:
        """SIGKILL every process started (the end of a test: the test has checked all it
        wanted, and its Redis and database are wiped next; a warm shutdown would only
        cost seconds per test)."""
        for process in self.processes:
            if process.poll() is None:
                kill_tree(process)
            else:
                process.wait()
        wait_for_killed_sessions()

    def output(self) -> str:
        return "\n".join(p.read_text() for p in self.logs if p.exists())


@pytest.fixture
def workers(redis_conn, redis_url, sandbox_settings, settings, tmp_path):
    """start(n) real workers; killed at the end."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "SANDBOX_URL": settings.SANDBOX_URL,
        "VAR_DIR": str(tmp_path),
        # The test's storage: its MEDIA_ROOT, or its prefix of the SeaweedFS bucket.
        **storage_env(settings),
        "TIME_SCALE": str(settings.TIME_SCALE),
        "LEASE_SECONDS": str(settings.LEASE_SECONDS),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PGAPPNAME": APP_NAME,
    }
    env.pop("GEMINI_API_KEY", None)
    handle = Workers(env)
    yield handle
    handle.kill_all()
