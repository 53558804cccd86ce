"""Chain versus naive client: a discrete-event simulation on a virtual clock.

The chain runs the production code itself (generator.resilience.policy.decide, Health with its
breaker and limiter on the in-memory store) against a simulated upstream that follows
docs/upstream.md ("How the models behave"): Pro fails ~45 % at peak in overload episodes
(503s), Flash under 10 %, token-bucket quotas that answer 429 with a retry delay, and
latencies of 20-40 s (Pro) and 10-20 s (Flash). The naive client is the "production"
variant described there: 3 attempts on Pro then 3 on Flash, sleeping inside the worker
(10 * 2**n + U(0, 5) s on 503, 60 s on 429), giving up on anything else.

    python -m benchmarks.chain_vs_naive --hours 2 --rate 6 --workers 6 --seed 1
"""

import argparse
import heapq
import itertools
import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.resilience.breaker import BreakerConfig
from generator.resilience.clock import VirtualClock
from generator.resilience.health import Health
from generator.resilience.limiter import LimiterConfig, Quotas
from generator.resilience.policy import Action, AttemptRecord, PolicyConfig, Situation, decide
from generator.resilience.stores import MemoryStore
from generator.resilience.taxonomy import Outcome

PRO, FLASH = "gemini-3-pro-image-preview", "gemini-2.5-flash-image"
QUOTAS = {PRO: Quotas(rpm=20, ipm=20, rpd=1000), FLASH: Quotas(rpm=150, ipm=100, rpd=10000)}
T0 = 1_767_279_600.0  # 2026-01-01 15:00 UTC: peak hours


class Upstream:
    """Peak profile: Pro alternates between overload episodes (85 % 503) and calmer
    spells (20 %), ~45 % overall; Flash fails 7 %. Quotas are token buckets."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.episode_until = T0
        self.in_episode = False
        self.buckets = {m: [float(q.rpm), T0] for m, q in QUOTAS.items()}
        self.calls = 0

    def _pro_fail_rate(self, now):
        while now >= self.episode_until:
            self.in_episode = not self.in_episode
            mean = 15 * 60 if self.in_episode else 20 * 60
            self.episode_until += self.rng.expovariate(1 / mean)
        return 0.85 if self.in_episode else 0.15

    def call(self, model, now) -> tuple[Outcome, float, float | None]:
        """(outcome, latency_s, retry_after_s)."""
        self.calls += 1
        tokens, last = self.buckets[model]
        rpm = QUOTAS[model].rpm
        tokens = min(rpm, tokens + (now - last) * rpm / 60)
        if tokens < 1:
            self.buckets[model] = [tokens, now]
            return Outcome.RATE_LIMITED, 0.3, (1 - tokens) * 60 / rpm + 1
        self.buckets[model] = [tokens - 1, now]
        fail = self._pro_fail_rate(now) if model == PRO else 0.07
        if self.rng.random() < fail:
            return Outcome.OVERLOADED, self.rng.uniform(1, 8), None
        low, high = (20, 40) if model == PRO else (10, 20)
        return Outcome.SUCCESS, self.rng.uniform(low, high), None


@dataclass
class Result:
    submitted: float
    done: float | None = None
    model: str = ""
    calls: int = 0
    failed_calls: int = 0
    attempts: list = field(default_factory=list)


def arrivals(rng, hours, rate_per_min):
    t, end = T0, T0 + hours * 3600
    while True:
        t += rng.expovariate(rate_per_min / 60)
        if t >= end:
            return
        yield t


def run_chain(seed, hours, rate, workers) -> list[Result]:
    rng = random.Random(seed)
    upstream = Upstream(random.Random(seed + 1))
    clock = VirtualClock(T0)
    health = Health(MemoryStore(), clock, QUOTAS, BreakerConfig(), LimiterConfig())
    config = PolicyConfig()
    results: list[Result] = []
    events: list = []  # (time, seq, kind, index)
    seq = itertools.count()
    for t in arrivals(rng, hours, rate):
        results.append(Result(submitted=t))
        heapq.heappush(events, (t, next(seq), "ready", len(results) - 1))
    ready: list[int] = []
    free = workers

    def step(i):
        r = results[i]
        chain = (PRO, FLASH)

        def ask():
            s = Situation(
                "quality-first",
                chain,
                tuple(r.attempts),
                health.snapshot(chain),
                clock.now(),
                r.submitted,
                None,
                f"{i}:{len(r.attempts)}",
            )
            return decide(s, config)

        # The same admission as the workers': policy, then the shared breaker and limiter.
        d = health.admit(ask, tries=len(chain) + 1)
        if d.action == Action.GIVE_UP:
            return None
        if d.action == Action.WAIT:
            return ("wait", d.at)
        return ("call", d.model)

    while events:
        t, _, kind, i = heapq.heappop(events)
        clock.t = t
        r = results[i]
        if kind == "ready":
            ready.append(i)
        elif kind == "done":
            free += 1
            model, outcome, latency, retry_after = r.pending
            r.calls += 1
            health.record(
                model,
                outcome,
                int(latency * 1000),
                retry_after_s=retry_after,
                quota_scope="minute" if retry_after else "",
            )
            r.attempts.append(AttemptRecord(model, outcome, t, retry_after, ""))
            if outcome == Outcome.SUCCESS:
                r.done, r.model = t, model
            else:
                r.failed_calls += 1
                ready.append(i)
        while ready and free:
            i = ready.pop(0)
            what = step(i)
            if what is None:
                continue
            if what[0] == "wait":
                heapq.heappush(events, (max(what[1], clock.now()), next(seq), "ready", i))
                continue
            outcome, latency, retry_after = upstream.call(what[1], clock.now())
            results[i].pending = (what[1], outcome, latency, retry_after)
            free -= 1
            heapq.heappush(events, (clock.now() + latency, next(seq), "done", i))
    return results


def run_naive(seed, hours, rate, workers) -> list[Result]:
    rng = random.Random(seed)
    upstream = Upstream(random.Random(seed + 1))
    results = [Result(submitted=t) for t in arrivals(rng, hours, rate)]
    # Each worker runs one request to the end, sleeping through its backoffs. A request
    # is a generator of calls; the simulation interleaves workers by virtual time.
    queue = list(range(len(results)))
    busy: list = []  # (time the worker's next call starts, seq, generator, index)
    seq = itertools.count()

    def client(r):
        t = max(r.submitted, (yield))
        for model in (PRO, FLASH):
            for attempt in range(3):
                outcome, latency, _ = upstream.call(model, t)
                r.calls += 1
                t += latency
                if outcome == Outcome.SUCCESS:
                    r.done, r.model = t, model
                    return
                r.failed_calls += 1
                if outcome == Outcome.OVERLOADED:
                    t += 10 * 2**attempt + rng.uniform(0, 5)
                elif outcome == Outcome.RATE_LIMITED:
                    t += 60
                else:
                    return
                t = max(t, (yield t))

    def start(i, at):
        g = client(results[i])
        next(g)
        try:
            t = g.send(at)
        except StopIteration:
            return False
        heapq.heappush(busy, (t, next(seq), g, i))
        return True

    free_at = [T0] * workers
    while queue or busy:
        # Give queued requests to idle workers in arrival order.
        while queue and len(busy) < workers:
            i = queue.pop(0)
            at = max(results[i].submitted, min(free_at))
            if not start(i, at):
                free_at[free_at.index(min(free_at))] = results[i].done or at
        if not busy:
            continue
        t, _, g, i = heapq.heappop(busy)
        try:
            heapq.heappush(busy, (g.send(t), next(seq), g, i))
        except StopIteration:
            end = results[i].done or t
            free_at[free_at.index(min(free_at))] = end
    return results


def summary(name, results):
    n = len(results)
    done = [r for r in results if r.done is not None]
    times = sorted(r.done - r.submitted for r in done)
    pro = sum(r.model == PRO for r in done)
    calls = sum(r.calls for r in results)
    wasted = sum(r.failed_calls for r in results)

    def q(p):
        return times[min(len(times) - 1, int(p * len(times)))] if times else float("nan")

    return (
        f"| {name} | {n} | {len(done) / n:.1%} | {pro / max(len(done), 1):.1%} | "
        f"{q(0.5):.0f} s | {q(0.95):.0f} s | {wasted} ({wasted / max(calls, 1):.0%}) | "
        f"{calls / max(len(done), 1):.2f} |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=6.0, help="requests per minute")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the breaker's transitions, hundreds of them
    print(
        "| client | requests | delivered | Pro share | p50 time to image | "
        "p95 time to image | wasted calls | calls per image |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, run in (("chain", run_chain), ("naive", run_naive)):
        print(summary(name, run(args.seed, args.hours, args.rate, args.workers)))


if __name__ == "__main__":
    main()
