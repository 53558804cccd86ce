"""Seed a realistic attempt log for the monitoring benchmark (and for demos).

Requests spread over the last --days, busier and failing more in the peak hours of
docs/upstream.md; each has one or more attempts (Pro overloaded or rate limited,
then a retry or a fall back to Flash). Rows are written in bulk and then rolled up.
"""

import random
import uuid
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.models import Team, User
from generator.models import Attempt, GenerationRequest
from monitoring import rollups

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
PEAK_HOURS = {1, 2, 12, 13, 14, 16, 17, 18}
FAILURES = [("rate_limited", 429), ("overloaded", 503), ("unavailable", 503), ("timeout", None)]


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--attempts", type=int, default=1_000_000)
        parser.add_argument("--requests", type=int, default=300_000)
        parser.add_argument("--days", type=int, default=14)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--batch", type=int, default=10_000)

    def handle(self, *args, attempts, requests, days, seed, batch, **options):
        if requests < 1 or attempts < requests:
            raise CommandError("Need at least one request and at least one attempt per request.")
        if days < 1:
            raise CommandError("--days must be at least 1.")
        rng = random.Random(seed)
        user = User.objects.filter(email="bench@example.com").first()
        if user is None:
            user = User.objects.create_user(
                "bench@example.com", "benchmark-password", name="Benchmark", is_staff=True
            )
            user.switch_team(Team.create_with_owner("Benchmark", user))
        team = user.active_team
        now = timezone.now()
        span = days * 86400
        # Spread the extra attempts over requests: each request gets 1 + extra ones.
        extra = attempts - requests
        reqs, atts, written_r, written_a = [], [], 0, 0
        for i in range(requests):
            left = requests - i
            k = 1 + min(extra, int(rng.expovariate(left / extra)) if extra else 0, 5)
            if i == requests - 1:
                k = 1 + extra
            extra -= k - 1
            created = now - timedelta(seconds=rng.uniform(60, span))
            peak = created.hour in PEAK_HOURS
            strategy = "quality-first" if rng.random() < 0.6 else "stability-first"
            chain = [PRO, FLASH] if strategy == "quality-first" else [FLASH, PRO]
            req_id = uuid.uuid4()
            moment = created + timedelta(seconds=rng.uniform(0.2, 4 if not peak else 20))
            started = moment
            served, model = "", chain[0]
            for n in range(1, k + 1):
                last = n == k
                fail_p = (0.45 if peak else 0.12) if model == PRO else (0.08 if peak else 0.04)
                # Every attempt but the last failed (that is why there was another one).
                ok = last and rng.random() > fail_p / 2
                outcome, http = ("success", 200) if ok else rng.choice(FAILURES)
                latency = int(rng.lognormvariate(10.1 if model == PRO else 9.5, 0.4))
                if outcome == "rate_limited":
                    latency = rng.randint(80, 600)
                atts.append(
                    Attempt(
                        request_id=req_id,
                        number=n,
                        model=model,
                        provider="gemini",
                        started=moment,
                        latency_ms=latency,
                        outcome=outcome,
                        http_status=http,
                    )
                )
                moment += timedelta(milliseconds=latency + rng.randint(500, 30_000))
                if ok:
                    served = model
                elif outcome in ("overloaded", "unavailable") and model == chain[0]:
                    model = chain[1]
            if moment > now:
                # A request with many attempts near `now` would end in the future, where
                # no rollup (nor the real log) has rows yet: move it back whole.
                shift = moment - now + timedelta(seconds=61)
                created, started, moment = created - shift, started - shift, moment - shift
                for attempt in atts[len(atts) - k :]:
                    attempt.started -= shift
            status = "succeeded" if served else "failed"
            reqs.append(
                GenerationRequest(
                    id=req_id,
                    user=user,
                    team=team,
                    prompt=f"benchmark prompt {i}",
                    strategy=strategy,
                    chain=chain,
                    status=status,
                    served_model=served,
                    fell_back=bool(served) and served != chain[0],
                    attempt_count=k,
                    error_code="" if served else atts[-1].outcome,
                    created=created,
                    started=started,
                    finished=moment,
                )
            )
            if len(atts) >= batch or i == requests - 1:
                with transaction.atomic():
                    GenerationRequest.objects.bulk_create(reqs, batch_size=batch)
                    Attempt.objects.bulk_create(atts, batch_size=batch)
                written_r += len(reqs)
                written_a += len(atts)
                reqs, atts = [], []
                self.stdout.write(f"\r{written_r} requests, {written_a} attempts", ending="")
        self.stdout.write("")
        self.stdout.write(f"Rolling up... {rollups.roll_up()}")
        self.stdout.write(
            self.style.SUCCESS(f"Seeded {written_r} requests, {written_a} attempts.")
        )
