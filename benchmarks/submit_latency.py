"""Benchmark: submit latency at a steady rate from several teams, with and without quota
limits, as the month's history grows (issue 17, "Admission in O(1)").

    createdb -h 127.0.0.1 -U postgres submit_bench   # once
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/submit_bench \\
        .venv/bin/python benchmarks/submit_latency.py

What runs: the product's web server as `make run` starts it (gunicorn, config.wsgi,
WEB_PROCESSES=2 × WEB_THREADS=8, DEBUG off) on a loopback port, a private Redis on a
unix socket (admission queues each request's job after commit), Postgres from
DATABASE_URL; no RQ workers, so nothing is delivered and every admission stays in
flight. The load is open loop: submission i is sent at start + i / rate whatever the
earlier ones are doing, round robin over the members of --teams teams, one image each
(`POST /api/v1/generations` with a personal token). Latency is from sending to the
answer; a send that starts late (the client fell behind) is counted and reported.

`--path direct` runs the same schedule in this process, calling
generator.admission.submit() from 16 threads with their own database connections:
admission alone, without HTTP, token lookup or the view. `--path serial` calls it from
one thread, each submission as soon as the previous one returned (--serial of them, no
schedule): what one admission costs when nothing waits for a lock or for the others, the
figure that moves least with the machine's load.

For each month size (--month, entries already in the ledger this month, spread over
the bench teams and matched by as many finished requests) it runs the load once without
limits and once with every limit set high enough never to refuse (images per day and
month, budget, member cap: all three counters move). Beside the latencies it samples
pg_stat_activity every 20 ms: "waiting on locks" is the share of busy database sessions
that were waiting for a lock (issue 17 found 63 % on the team row), and "behind a
client" the share of those waits whose lock holder was idle in its transaction, waiting
for its client's next statement (a counter row held across a client round trip). Exits non-zero when
a run with limits has a p95 over --budget-ms.
"""

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

PRICE = Decimal("0.134")  # Pro at 1K: the default submission's worst case
LIMITS = {
    "images_per_day": 1_000_000,
    "images_per_month": 10_000_000,
    "monthly_budget_usd": Decimal("1000000"),
    "member_daily_cap": 1_000_000,
}
NO_LIMITS = dict.fromkeys(LIMITS)


def _teams(count: int, members: int):
    """The bench teams and one API token per member, created once."""
    from accounts.models import ApiToken, Membership, Team, User

    tokens = []
    for t in range(count):
        team, _ = Team.objects.get_or_create(name=f"Bench team {t}")
        for m in range(members):
            user, _ = User.objects.get_or_create(email=f"bench{t}-{m}@example.com")
            Membership.objects.get_or_create(team=team, user=user)
            ApiToken.objects.filter(user=user).delete()
            tokens.append(ApiToken.issue(user, "bench")[1])
    return list(Team.objects.filter(name__startswith="Bench team ")), tokens


def _fill(teams, entries: int) -> None:
    """Start from an empty history, then give the teams `entries` requests admitted this
    month (before today), each reserved and charged: what a busy month leaves behind,
    for the old counting (which summed the requests) and the new (the ledger) alike."""
    from generator.models import GenerationRequest, QuotaState, Status
    from quotas.models import UsageCounter, UsageEntry
    from quotas.periods import periods

    GenerationRequest.objects.filter(team__in=teams).delete()
    UsageEntry.objects.filter(team__in=teams).delete()
    UsageCounter.objects.filter(team__in=teams).delete()
    p = periods()
    span = max((p.day_start - p.month_start).total_seconds(), 3600)
    members = {team.pk: list(team.memberships.values_list("user_id", flat=True)) for team in teams}
    rng = random.Random(1)
    batch_requests, batch_entries = [], []
    for i in range(entries):
        team = teams[i % len(teams)]
        user_id = rng.choice(members[team.pk])
        admitted = p.month_start + timedelta(seconds=rng.uniform(0, span - 1))
        request = GenerationRequest(
            user_id=user_id, team=team, prompt="history", strategy="quality-first",
            chain=["gemini-3-pro-image-preview"], status=Status.SUCCEEDED,
            quota_state=QuotaState.CHARGED, reserved_usd=PRICE, cost_usd=PRICE,
            created=admitted, finished=admitted,
        )  # fmt: skip
        batch_requests.append(request)
        common = {"team": team, "user_id": user_id, "images": 1, "admitted": admitted}
        batch_entries.append(UsageEntry(kind="reserve", amount_usd=PRICE, **common))
        batch_entries.append(
            UsageEntry(
                kind="charge", request_id=request.pk, amount_usd=PRICE, reserved_usd=PRICE,
                **common,
            )
        )  # fmt: skip
        if len(batch_requests) == 5000 or i == entries - 1:
            GenerationRequest.objects.bulk_create(batch_requests)
            UsageEntry.objects.bulk_create(batch_entries)
            batch_requests, batch_entries = [], []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server(port: int, redis_url: str) -> subprocess.Popen:
    env = dict(
        os.environ,
        DEBUG="0",
        HTTPS="0",
        SECRET_KEY="bench-only-" + "x" * 40,
        ALLOWED_HOSTS="127.0.0.1",
        REDIS_URL=redis_url,
    )
    cmd = [
        sys.executable, "-m", "gunicorn", "config.wsgi",
        "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8",
        "--graceful-timeout", "5", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(cmd, cwd=ROOT, env=env)
    import httpx

    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("The web server did not start.")


def _http_sender(port: int, tokens: list[str]):
    """Each client thread's way to submit: the JSON API over one keep-alive connection."""
    import httpx

    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def send(i: int) -> int:
        try:
            return http.post(
                "/api/v1/generations",
                json={"prompt": f"bench {i}"},
                headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
            ).status_code
        except httpx.HTTPError:
            return 0

    return send, http.close


def _direct_sender(members: list):
    """Each thread's way to submit in this process: generator.admission.submit() on the
    thread's own database connection (admission alone: no HTTP, no token, no view)."""
    from django.db import connection

    from generator.admission import Submission, submit
    from quotas.errors import QuotaExceeded

    def send(i: int) -> int:
        user, team = members[i % len(members)]
        try:
            submit(user, team, Submission(prompt=f"bench {i}"))
        except QuotaExceeded:
            return 429
        return 202

    return send, connection.close


def _load(sender, rate: float, seconds: float, warmup: float, threads: int) -> dict:
    """Open-loop load: submission i at start + i / rate, over a pool of client threads."""
    total = int(rate * (seconds + warmup))
    start = time.monotonic() + 0.5
    results: list[tuple[float, float, int] | None] = [None] * total
    next_index = iter(range(total))
    lock = threading.Lock()

    def client():
        send, close = sender()
        try:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                due = start + i / rate
                time.sleep(max(0.0, due - time.monotonic()))
                sent = time.monotonic()
                status = send(i)
                results[i] = (time.monotonic() - sent, sent - due, status)
        finally:
            close()

    load_before = os.getloadavg()[0]
    pool = [threading.Thread(target=client) for _ in range(threads)]
    waits = {"lock": 0, "active": 0, "behind_client": 0}
    done = threading.Event()
    sampler = threading.Thread(target=_sample_waits, args=(waits, done))
    sampler.start()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    done.set()
    sampler.join()
    measured = [r for i, r in enumerate(results) if r and i >= rate * warmup]
    latencies = sorted(r[0] * 1000 for r in measured)
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "sent": len(measured),
        "accepted": sum(1 for r in measured if r[2] == 202),
        "errors": sum(1 for r in measured if r[2] != 202),
        "late": sum(1 for r in measured if r[1] > 0.05),
        "p50": statistics.median(latencies),
        "p95": quantiles[94],
        "p99": quantiles[98],
        "max": latencies[-1],
        "lock_share": 100 * waits["lock"] / max(waits["active"], 1),
        "behind_client": 100 * waits["behind_client"] / max(waits["lock"], 1),
        # The machine's 1-minute load average before and after the run: on a shared
        # machine the latencies mean little without it.
        "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}",
    }


def _serial(members: list, count: int) -> dict:
    """`count` admissions back to back from one thread: their service time alone."""
    send, close = _direct_sender(members)
    load_before = os.getloadavg()[0]
    try:
        for i in range(10):  # warm-up: connections, imports, caches
            send(-1 - i)
        latencies = []
        for i in range(count):
            sent = time.monotonic()
            send(i)
            latencies.append((time.monotonic() - sent) * 1000)
    finally:
        close()
    latencies.sort()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "sent": count, "accepted": count, "errors": 0, "late": 0,
        "p50": statistics.median(latencies), "p95": quantiles[94], "p99": quantiles[98],
        "max": latencies[-1], "lock_share": 0, "behind_client": 0,
        "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}",
    }  # fmt: skip


def _sample_waits(waits: dict, done: threading.Event) -> None:
    """Every 20 ms, the database's busy sessions, those waiting for a lock (a row lock
    shows as `Lock`: `transactionid` or `tuple`), and of those the ones whose blocker
    was idle in its transaction: holding the row while its client had not yet sent the
    next statement (a client round trip under the lock, what issue 17 removed). The
    first two's ratio is the share of database time spent waiting on locks."""
    from django.db import connection

    query = (
        "SELECT count(*) FILTER (WHERE a.wait_event_type = 'Lock'), count(*), "
        "count(*) FILTER (WHERE a.wait_event_type = 'Lock' AND EXISTS ("
        "  SELECT 1 FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid))"
        "  AND b.state = 'idle in transaction')) "
        "FROM pg_stat_activity a WHERE a.datname = current_database() "
        "AND a.state = 'active' AND a.backend_type = 'client backend' "
        "AND a.pid <> pg_backend_pid()"
    )
    try:
        with connection.cursor() as cursor:
            while not done.wait(0.02):
                cursor.execute(query)
                lock, active, behind_client = cursor.fetchone()
                waits["lock"] += lock
                waits["active"] += active
                waits["behind_client"] += behind_client
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="submissions per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--teams", type=int, default=5)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--month", default="0,50000", help="ledger entries this month, per run")
    parser.add_argument("--budget-ms", type=float, default=50.0)
    parser.add_argument(
        "--path",
        default="http,direct",
        help="http: through the web server; direct: admission.submit() in this process; "
        "serial: admission.submit() back to back from one thread",
    )
    parser.add_argument("--serial", type=int, default=300, help="submissions, --path serial")
    args = parser.parse_args()

    from config.redis_server import redis_command, wait_for_socket

    # Admission queues each request's job after commit: a private Redis for it, set
    # before Django reads the settings.
    directory = Path(tempfile.mkdtemp(prefix="submit-bench-"))
    cmd, redis_socket = redis_command(directory, persist=False)
    redis = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_socket(redis_socket, redis)
        os.environ["REDIS_URL"] = f"unix://{redis_socket}?db=0"
        return _run(args)
    finally:
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def _run(args) -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import Membership
    from quotas.services import set_limits

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        print("Set DATABASE_URL to a Postgres database (the figure is defined on Postgres).")
        return 2
    call_command("migrate", verbosity=0)
    teams, tokens = _teams(args.teams, args.members)

    members = [
        (m.user, m.team)
        for m in Membership.objects.filter(team__in=teams).select_related("user", "team")
    ]
    paths = args.path.split(",")
    port = _free_port()
    server = _server(port, os.environ["REDIS_URL"]) if "http" in paths else None
    failed = False
    try:
        print(
            f"{args.rate:g} submissions/s for {args.seconds:g} s, {args.teams} teams × "
            f"{args.members} members\n"
        )
        print(
            "| path | month's entries | limits | sent | accepted | p50 ms | p95 ms | p99 ms "
            "| max ms | late sends | waiting on locks | behind a client | load average |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for month in (int(m) for m in args.month.split(",")):
            for limited in (False, True):
                for path in paths:
                    _fill(teams, month)
                    for team in teams:
                        set_limits(team, **(LIMITS if limited else NO_LIMITS))
                    with connection.cursor() as cursor:
                        cursor.execute("ANALYZE")
                    if path == "serial":
                        r = _serial(members, args.serial)
                    elif path == "http":
                        r = _load(
                            lambda: _http_sender(port, tokens),
                            args.rate,
                            args.seconds,
                            args.warmup,
                            48,
                        )
                    else:
                        r = _load(
                            lambda: _direct_sender(members),
                            args.rate,
                            args.seconds,
                            args.warmup,
                            16,
                        )
                    print(
                        f"| {path} | {month:,} | {'all four' if limited else 'none'} | {r['sent']} "
                        f"| {r['accepted']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
                        f"| {r['max']:.1f} | {r['late']} | {r['lock_share']:.0f} % "
                        f"| {r['behind_client']:.0f} % | {r['load']} |",
                        flush=True,
                    )
                    failed |= limited and r["p95"] > args.budget_ms and path != "serial"
                    failed |= r["errors"] > 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
