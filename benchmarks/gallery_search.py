"""Benchmark: the gallery and its prompt search at 100,000 images (issue 17).

    createdb -h 127.0.0.1 -U postgres gallery_bench   # once
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gallery_bench \\
        .venv/bin/python benchmarks/gallery_search.py --seed

--seed empties the benchmark team and gives it --images requests (default 100,000), each
with its image row (bulk inserts: about 2 minutes here), over 90 days, from 4 members;
the newest few are still queued or waiting, as in a busy team, so the first page shows
live cards. A second team with as many rows shares the table (the search must not
wander into it). Without --seed the existing data is measured.

Each case is requested --runs times after two warm-up requests, through Django's test
client in this process (the whole view: form, queries, template; no network), signed in
as a member of the team: the first page, a later page (keyset, `before` a row about
halfway down), two filters (fell back to Nano Banana; queued), and prompt searches for a
word in ~1 in 8 prompts, a word in ~1 in 10,000 and a word in none. It prints p50/p95 in
ms, the page's number of queries and their time (one request, as Django timed them),
the machine's load average, and the plan Postgres chose for each search's page
query (EXPLAIN ANALYZE). Exits non-zero when a search's p95 is over --budget-ms.
"""

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("HTTPS", "0")
os.environ.setdefault("SECRET_KEY", "bench-only-" + "x" * 40)
os.environ.setdefault("ALLOWED_HOSTS", "testserver")

TEAM = "Gallery bench"
OTHER_TEAM = "Gallery bench (other team)"
SUBJECTS = ["cat", "dog", "lighthouse", "mountain", "robot", "teapot", "forest", "city"]
STYLES = ["watercolour", "oil painting", "photograph", "pencil sketch", "pixel art"]
PLACES = ["at dawn", "in the rain", "under neon lights", "on the moon", "by the sea"]
RARE = "zeppelin"  # one prompt in ~10,000
ABSENT = "quetzalcoatl"  # in no prompt
PRO, FLASH = "gemini-3-pro-image-preview", "gemini-2.5-flash-image"


def _prompt(rng: random.Random, i: int) -> str:
    words = f"A {rng.choice(STYLES)} of a {rng.choice(SUBJECTS)} {rng.choice(PLACES)}"
    if i % 10_000 == 5_000:
        words += f" with a {RARE} overhead"
    return f"{words}, number {i}"


def _team(name: str, members: int):
    from accounts.models import Membership, Team, User

    team, _ = Team.objects.get_or_create(name=name)
    users = []
    for m in range(members):
        user, _ = User.objects.get_or_create(email=f"gallery{m}-{team.pk.hex[:6]}@example.com")
        Membership.objects.get_or_create(team=team, user=user)
        user.switch_team(team)
        users.append(user)
    return team, users


def _seed(team, users, count: int, live: int) -> None:
    """`count` requests with their image rows, newest `live` still queued or waiting."""
    from django.utils import timezone

    from generator.models import GenerationRequest, Image, QuotaState, Status

    GenerationRequest.objects.filter(team=team).delete()
    rng = random.Random(team.name)
    now = timezone.now()
    span = timedelta(days=90).total_seconds()
    requests, images = [], []
    for i in range(count):
        created = now - timedelta(seconds=span * (count - i) / count)
        fell_back = rng.random() < 0.2
        model = FLASH if fell_back else PRO
        common = {
            "user": users[i % len(users)], "team": team, "prompt": _prompt(rng, i),
            "strategy": "quality-first", "chain": [PRO, FLASH], "created": created,
        }  # fmt: skip
        if i >= count - live:
            waiting = i % 3 == 0
            status = Status.WAITING if waiting else Status.QUEUED
            request = GenerationRequest(
                **common, status=status, step=1, current_model=PRO, handed_over=created,
                waiting_until=created if waiting else None,
                quota_state=QuotaState.RESERVED, reserved_usd=Decimal("0.134"),
            )  # fmt: skip
        else:
            request = GenerationRequest(
                **common, status=Status.SUCCEEDED, served_model=model, fell_back=fell_back,
                current_model=model, attempt_count=2 if fell_back else 1, finished=created,
                quota_state=QuotaState.CHARGED, cost_usd=Decimal("0.039"),
                delivered_width=1024, delivered_height=1024,
            )  # fmt: skip
            images.append(
                Image(
                    request=request, team=team, file=f"images/bench/{i}.png",
                    thumbnail=f"thumbnails/bench/{i}.webp", width=1024, height=1024,
                    mime="image/png", bytes=1_000_000, sha256="0" * 64, created=created,
                )
            )  # fmt: skip
        requests.append(request)
        if len(requests) == 5_000 or i == count - 1:
            GenerationRequest.objects.bulk_create(requests)
            Image.objects.bulk_create(images)
            requests, images = [], []


def _time(client, url: str, runs: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):
        assert client.get(url).status_code == 200, url
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, url
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    times.sort()
    return {
        "p50": statistics.median(times),
        "p95": statistics.quantiles(times, n=20)[18] if runs >= 2 else times[0],
        "queries": len(queries),
        "db_ms": 1000 * sum(float(q["time"]) for q in queries.captured_queries),
        "cards": response.content.count(b'<article class="tile'),
    }


def _plan(user, team, q: str) -> str:
    """EXPLAIN ANALYZE of the gallery's page query for a search (the view's own query)."""
    from generator.models import GenerationRequest

    rows = (
        GenerationRequest.objects.visible_to(user)
        .filter(team=team)
        .filtered(user, {"q": q})
        .order_by("-created", "-id")[:25]
    )
    return rows.explain(analyze=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", action="store_true", help="(re)seed the bench teams first")
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--live", type=int, default=12, help="newest requests still active")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--budget-ms", type=float, default=100.0)
    parser.add_argument("--plans", action="store_true", help="print each search's plan")
    args = parser.parse_args()

    from benchmarks.postgres import setup_postgres

    if not setup_postgres():
        return 2
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from generator.models import GenerationRequest

    call_command("collectstatic", interactive=False, verbosity=0)  # DEBUG off: the manifest
    team, users = _team(TEAM, 4)
    other, other_users = _team(OTHER_TEAM, 2)
    if args.seed:
        started = time.perf_counter()
        _seed(team, users, args.images, args.live)
        _seed(other, other_users, args.images, 0)
        print(f"Seeded 2 × {args.images:,} requests in {time.perf_counter() - started:.0f} s")
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE generator_generationrequest")
            cursor.execute("VACUUM ANALYZE generator_image")
    rows = GenerationRequest.objects.filter(team=team)
    total = rows.count()
    halfway = rows.order_by("-created", "-id").values_list("pk", flat=True)[total // 2]
    common = SUBJECTS[0]
    cases = [
        ("first page", ""),
        ("a later page (keyset, halfway)", f"?before={halfway}"),
        ("filter: fell back to Nano Banana", f"?model={FLASH}&fell_back=yes"),
        ("filter: queued", "?status=queued"),
        (f"search, common word ({common!r})", f"?q={common}"),
        (f"search, rare word ({RARE!r})", f"?q={RARE}"),
        (f"search, no match ({ABSENT!r})", f"?q={ABSENT}"),
        ("search, rare word, a later page", f"?q={RARE}&before={halfway}"),
    ]
    matches = {q: rows.filter(prompt__icontains=q).count() for q in (common, RARE, ABSENT)}
    client = Client()
    client.force_login(users[0])
    print(
        f"{total:,} requests in the team ({GenerationRequest.objects.count():,} in the table); "
        f"matches: {', '.join(f'{q!r} {n:,}' for q, n in matches.items())}; "
        f"{args.runs} runs each\n"
    )
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| case | cards | queries | of it in queries, ms | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|")
    failed = False
    for name, query in cases:
        r = _time(client, "/gallery/" + query, args.runs)
        print(
            f"| {name} | {r['cards']} | {r['queries']} | {r['db_ms']:.1f} | {r['p50']:.1f} "
            f"| {r['p95']:.1f} |"
        )
        failed |= "search" in name and r["p95"] > args.budget_ms
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.plans:
        for q in (common, RARE, ABSENT):
            print(f"\nPlan for q={q!r}:\n{_plan(users[0], team, q)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
