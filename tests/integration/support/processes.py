"""Stopping the servers and processes the fixtures start."""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from django.db import connection

# The application_name (libpq reads PGAPPNAME) of the database sessions of the processes
# the fixtures start, so that their end can be told from the test process's own.
APP_NAME = "steadyshot-test-process"


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a process and every process it started (RQ's scheduler, forked by the
    worker's main thread or by its watchdog thread; a gunicorn master's workers). It is
    stopped first, so that it starts nothing more, and its descendants are listed before
    it dies: an orphan is re-parented and no longer its child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGSTOP)
    descendants = _descendants(process.pid)
    process.kill()
    for pid in descendants:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def _descendants(pid: int) -> list[int]:
    """The children of every thread of `pid`, and theirs."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in map(int, children.read_text().split()):
                found += [child, *_descendants(child)]
    return found


def wait_for_killed_sessions(timeout: float = 10.0) -> None:
    """Postgres ends the session of a killed process a moment after it died: wait for
    those of the processes the fixtures started, so that the test database is flushed
    (and at the end dropped) with nobody else in it."""
    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            cursor = connection.cursor()
        except RuntimeError:  # pytest-django: a test without database access
            return
        with cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = %s",
                [APP_NAME],
            )
            if not cursor.fetchone()[0]:
                return
        time.sleep(0.05)
