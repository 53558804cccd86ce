"""Benchmark: Redis memory per 1,000 waiting requests (docs/deploy.md, sizing).

    .venv/bin/python benchmarks/redis_memory.py

Starts a private redis-server on a unix socket in a temporary directory (never a shared
Redis), then enqueues 1,000 request steps exactly as the app does (generator.queue:
job id, job timeout, result and failure TTLs, the per-team RateLimit) in three shapes:
queued across many teams, queued behind one team's concurrency limit, and waiting for
a delayed retry (the scheduler's registry). Each shape starts from an empty database;
the figure is the growth of INFO used_memory. The database keeps the requests
themselves; Redis only holds these jobs, so its memory grows with the backlog, not with
history (finished jobs expire after 10 minutes).
"""

import os
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

COUNT = 1000


def main() -> int:
    from config.redis_server import redis_command, wait_for_socket

    with tempfile.TemporaryDirectory() as directory:
        cmd, socket = redis_command(Path(directory), persist=False)
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_for_socket(socket, server)
            return measure(f"unix://{socket}?db=0")
        finally:
            server.terminate()
            server.wait(timeout=10)


def measure(url: str) -> int:
    os.environ["REDIS_URL"] = url
    import django

    django.setup()
    import redis

    from generator import queue

    conn = redis.Redis.from_url(url)
    later = datetime.now(UTC) + timedelta(hours=1)
    shapes = {
        "queued, 50 teams": lambda n: queue._enqueue(_request(n % 50), None),
        "queued, one team (rate limited)": lambda n: queue._enqueue(_request(0), None),
        "waiting for a retry (scheduled)": lambda n: queue._enqueue(_request(n % 50), later),
    }
    print(f"| shape | Redis memory per {COUNT:,} requests |")
    print("|---|---|")
    for name, enqueue in shapes.items():
        conn.flushdb()
        before = conn.info("memory")["used_memory"]
        for n in range(COUNT):
            enqueue(n)
        grown = conn.info("memory")["used_memory"] - before
        print(f"| {name} | {grown / 1024 / 1024:.2f} MiB ({grown / COUNT:,.0f} bytes each) |")
    conn.flushdb()
    return 0


def _request(team: int):
    """What queue.enqueue reads of a request: its id, step and team."""
    return SimpleNamespace(id=uuid.uuid4(), step=0, team_id=team)


if __name__ == "__main__":
    sys.exit(main())
