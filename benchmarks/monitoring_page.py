"""Benchmark: the monitoring page's render time on a large attempt log.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/monitoring_bench \
        .venv/bin/python benchmarks/monitoring_page.py --seed

--seed (re)creates the database's tables and seeds 1,000,000 attempts and 300,000
requests with `manage.py seed_monitoring` (a few minutes); without it the existing data
is measured. Each window is rendered --runs times after a warm-up, through Django's
test client (the full view, templates and queries; no network). Exits non-zero when a
median is over the --budget-ms.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", action="store_true", help="flush, migrate and seed first")
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--budget-ms", type=float, default=300.0)
    args = parser.parse_args()

    from benchmarks.postgres import setup_postgres

    if not setup_postgres():
        return 2
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from accounts.models import User
    from generator.models import Attempt, GenerationRequest

    if args.seed:
        Attempt.objects.all().delete()
        GenerationRequest.objects.all().delete()
        call_command("seed_monitoring", attempts=args.attempts, requests=args.requests)
    call_command("monitoring_rollup")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    staff = User.objects.get(email="bench@example.com")
    client = Client(HTTP_HOST="localhost")
    client.force_login(staff)
    print(f"{Attempt.objects.count():,} attempts, {GenerationRequest.objects.count():,} requests")
    worst = 0.0
    for window in ("15m", "1h", "24h", "7d"):
        url = f"/monitoring/?window={window}"
        assert client.get(url).status_code == 200  # warm-up
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        median = statistics.median(times)
        worst = max(worst, median)
        print(f"window {window:>3}: median {median:6.1f} ms, max {max(times):6.1f} ms")
    print(f"worst median {worst:.1f} ms (budget {args.budget_ms:.0f} ms)")
    return 0 if worst < args.budget_ms else 1


if __name__ == "__main__":
    sys.exit(main())
