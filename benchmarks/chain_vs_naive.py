"""Chain versus naive client: a discrete-event simulation on a virtual clock.

The chain is the production code itself: `generator.resilience.chain.next_step` (the
policy, then the shared breaker and limiter of `Health` on the in-memory store), as the
RQ workers run it. The upstream is the sandbox's own pure fault model
(`generator.upstream.sandbox.profiles`: each model's `ModelState` with its overload
episodes, latencies and token-bucket quotas), switched between profiles on a schedule
as a drill switches the sandbox. The naive client is the "production" variant of
docs/upstream.md ("How the models behave"): 3 tries on Pro, then 3 on Flash, sleeping
inside the worker (10·2ⁿ + U(0, 5) s after a 503, 60 s after a 429) and moving on after
anything else.

Both clients get the same arrivals (Poisson) and the same number of workers: a chain
step holds a worker for its call only, a naive request holds one from start to end.

    python -m benchmarks.chain_vs_naive                 # every regime, seeds 1-3
    python -m benchmarks.chain_vs_naive --regime quota --seeds 1-10
"""

import argparse
import heapq
import itertools
import logging
import math
import random
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.resilience import chain
from generator.resilience.breaker import BreakerConfig
from generator.resilience.clock import VirtualClock
from generator.resilience.health import Health
from generator.resilience.limiter import LimiterConfig, Quotas
from generator.resilience.policy import Action, AttemptRecord, PolicyConfig
from generator.resilience.stores import MemoryStore
from generator.resilience.taxonomy import Outcome
from generator.upstream.sandbox.profiles import (
    FLASH_ID,
    ModelBehaviour,
    ModelState,
    Profile,
    Quota,
    builtin_profiles,
)

PRO, FLASH = "gemini-3-pro-image-preview", FLASH_ID
T0 = 1_767_279_600.0  # 2026-01-01 15:00 UTC: peak hours
# The catalogue's quotas (generator/resilience/catalogue.py), which the limiter keeps to.
CATALOGUE = {PRO: Quotas(rpm=20, ipm=20, rpd=1000), FLASH: Quotas(rpm=150, ipm=100, rpd=10000)}
CHAINS = {"quality-first": (PRO, FLASH), "stability-first": (FLASH, PRO)}


# --- regimes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regime:
    name: str
    description: str
    phases: tuple[tuple[float, Profile], ...]  # (start, seconds after T0; the profile)
    minutes: float  # how long requests arrive
    rate: float  # arrivals per minute (Poisson)
    workers: int
    quotas: dict[str, Quotas] = field(default_factory=lambda: CATALOGUE)


def regimes() -> dict[str, Regime]:
    profiles = builtin_profiles()
    calm, peak, outage = profiles["calm"], profiles["peak"], profiles["outage"]
    flash = calm.behaviour(FLASH)
    quota = Profile(
        "quota-2rpm",
        "Pro: a quota of 2 requests per minute and 30 % 503s; Flash calm",
        {
            PRO: ModelBehaviour(latency_s=(20.0, 40.0), overloaded=0.3, quota=Quota(rpm=2)),
            FLASH: replace(flash, quota=Quota(rpm=150, ipm=100)),
        },
    )
    hard = Profile(
        "hard",
        "Pro: 90 % 503s, each after 20-60 s; Flash calm",
        {
            PRO: ModelBehaviour(
                latency_s=(20.0, 40.0), error_latency_s=(20.0, 60.0), overloaded=0.9
            ),
            FLASH: flash,
        },
    )
    drill = ((0.0, calm), (600.0, peak), (2400.0, outage))
    what = "calm 10 min, peak 30 min, Pro outage 20 min"
    return {
        r.name: r
        for r in (
            Regime("calm", "every call succeeds", ((0.0, calm),), 60, 4.0, 8),
            Regime("drill-8", f"{what}; 8 workers", drill, 60, 4.0, 8),
            Regime("drill-4", f"{what}; 4 workers", drill, 60, 4.0, 4),
            Regime(
                "quota",
                "Pro quota 2 RPM, 30 % 503s; 3.6 arrivals a minute",
                ((0.0, quota),),
                60,
                3.6,
                8,
                {**CATALOGUE, PRO: Quotas(rpm=2, ipm=2, rpd=1000)},
            ),
            Regime("hard", "Pro 90 % 503s, each after 20-60 s", ((0.0, hard),), 90, 2.0, 8),
            Regime("outage-4h", "Pro down for 4 hours", ((0.0, outage),), 240, 4.0, 8),
        )
    }


class Upstream:
    """The sandbox's fault model on the simulator's clock: one `ModelState` per model
    and phase. Calls to one model draw their outcomes from one generator in call order,
    as in the sandbox server; the episodes draw from their own, so that every client
    meets the same overload episodes whatever it calls when."""

    def __init__(self, regime: Regime, seed: int):
        self.phases = []
        for start, profile in regime.phases:
            states = {}
            for model in (PRO, FLASH):
                episodes = random.Random(f"{seed}:{profile.name}:{model}:episodes")
                state = ModelState(profile.behaviour(model), T0 + start, episodes)
                states[model] = (state, episodes)
            self.phases.append((T0 + start, states))
        self.rngs = {m: random.Random(f"{seed}:{m}:calls") for m in (PRO, FLASH)}

    def call(self, model: str, now: float):
        """The sandbox's Verdict for one call at `now`."""
        states = next(s for start, s in reversed(self.phases) if start <= now)
        state, episodes = states[model]
        if state.episodes:
            state.episodes.advance(now, episodes)
        return state.decide(now, self.rngs[model])


# --- the clients --------------------------------------------------------------------------


@dataclass
class Request:
    submitted: float
    done: float | None = None
    model: str = ""
    calls: int = 0
    rate_limited: int = 0
    worker_s: float = 0.0
    attempts: list = field(default_factory=list)


def arrivals(seed: int, regime: Regime) -> list[Request]:
    rng = random.Random(f"{seed}:arrivals")
    t, end, requests = T0, T0 + regime.minutes * 60, []
    while True:
        t += rng.expovariate(regime.rate / 60)
        if t >= end:
            return requests
        requests.append(Request(submitted=t))


def _called(request: Request, verdict) -> Outcome:
    request.calls += 1
    request.worker_s += verdict.latency_s
    outcome = Outcome(verdict.outcome)
    request.rate_limited += outcome == Outcome.RATE_LIMITED
    return outcome


def run_chain(regime: Regime, seed: int, strategy: str = "quality-first") -> list[Request]:
    upstream = Upstream(regime, seed)
    clock = VirtualClock(T0)
    health = Health(MemoryStore(), clock, regime.quotas, BreakerConfig(), LimiterConfig())
    config = PolicyConfig()
    requests = arrivals(seed, regime)
    events: list = []  # (time, seq, kind, index)
    seq = itertools.count()
    for i, r in enumerate(requests):
        heapq.heappush(events, (r.submitted, next(seq), "ready", i))
    ready: list[int] = []  # the RQ queue: first in, first out
    free = regime.workers

    def ticket(i: int) -> chain.Ticket:
        r = requests[i]
        return chain.Ticket(
            str(i), strategy, CHAINS[strategy], r.submitted, None, tuple(r.attempts)
        )

    while events:
        t, _, kind, i = heapq.heappop(events)
        clock.t = t
        r = requests[i]
        if kind == "done":
            free += 1
            model, verdict = r.pending
            outcome = _called(r, verdict)
            retry_after = verdict.retry_s if outcome == Outcome.RATE_LIMITED else None
            scope = {"rpd": "day"}.get(verdict.quota_dim, "minute") if retry_after else ""
            health.record(
                model,
                outcome,
                int(verdict.latency_s * 1000),
                retry_after_s=retry_after,
                quota_scope=scope,
            )
            r.attempts.append(AttemptRecord(model, outcome, t, retry_after, scope))
            if outcome == Outcome.SUCCESS:
                r.done, r.model = t, model
                continue
            # After a call the worker asks the policy at once: now, or at a later time.
            decision = chain.ask(ticket(i), health, config)
            if decision.action == Action.GIVE_UP:
                continue
            at = decision.at if decision.action == Action.WAIT else t
            heapq.heappush(events, (max(at, t), next(seq), "ready", i))
            continue
        ready.append(i)
        while ready and free:
            i = ready.pop(0)
            decision = chain.next_step(ticket(i), health, config)
            if decision.action == Action.WAIT:
                heapq.heappush(events, (max(decision.at, t), next(seq), "ready", i))
            elif decision.action == Action.CALL:
                requests[i].pending = (decision.model, upstream.call(decision.model, t))
                free -= 1
                heapq.heappush(
                    events, (t + requests[i].pending[1].latency_s, next(seq), "done", i)
                )
    return requests


def run_naive(regime: Regime, seed: int) -> list[Request]:
    upstream = Upstream(regime, seed)
    rng = random.Random(f"{seed}:naive")
    requests = arrivals(seed, regime)

    def client(r: Request, start: float):
        """Yields (time of the next call, model) and receives its verdict."""
        t = start
        for model in CHAINS["quality-first"]:
            for n in range(3):
                verdict = yield t, model
                outcome = _called(r, verdict)
                t += verdict.latency_s
                if outcome == Outcome.SUCCESS:
                    r.done, r.model = t, model
                    return
                if outcome in (Outcome.OVERLOADED, Outcome.UNAVAILABLE):
                    pause = 10 * 2**n + rng.uniform(0, 5)
                elif outcome == Outcome.RATE_LIMITED:
                    pause = 60.0
                else:
                    break  # anything else: give up on this model
                r.worker_s += pause  # asleep in the worker
                t += pause

    # Calls are made in time order across workers (the upstream's state depends on it):
    # a heap of each busy worker's next call.
    queue = list(range(len(requests)))
    busy: list = []  # (time of the next call, seq, model, generator, index)
    seq = itertools.count()
    free_at = [T0] * regime.workers

    def start(i: int):
        worker = min(range(regime.workers), key=free_at.__getitem__)
        begin = max(requests[i].submitted, free_at[worker])
        g = client(requests[i], begin)
        t, model = next(g)
        heapq.heappush(busy, (t, next(seq), model, g, i, worker))
        free_at[worker] = math.inf

    while queue or busy:
        while queue and any(f < math.inf for f in free_at):
            start(queue.pop(0))
        t, _, model, g, i, worker = heapq.heappop(busy)
        verdict = upstream.call(model, t)
        try:
            t_next, model = g.send(verdict)
            heapq.heappush(busy, (t_next, next(seq), model, g, i, worker))
        except StopIteration:
            r = requests[i]
            free_at[worker] = r.done or t + verdict.latency_s
    return requests


# --- figures -----------------------------------------------------------------------------


def figures(requests: list[Request]) -> dict:
    done = [r for r in requests if r.done is not None]
    times = sorted(r.done - r.submitted for r in done)

    def q(p):
        return times[min(len(times) - 1, int(p * len(times)))] if times else math.nan

    n, d = len(requests), max(len(done), 1)
    return {
        "requests": n,
        "delivered": len(done) / n,
        "pro": sum(r.model == PRO for r in done) / d,
        "calls": sum(r.calls for r in requests) / d,
        "self429": sum(r.rate_limited for r in requests),
        "p50": q(0.50),
        "p95": q(0.95),
        "p99": q(0.99),
        "worker_s": sum(r.worker_s for r in requests) / d,
    }


HEADER = (
    "| regime | client | requests | delivered | Pro share | calls / image | self 429 "
    "| p50 | p95 | p99 | worker-s / image |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def row(regime: str, client: str, f: dict) -> str:
    return (
        f"| {regime} | {client} | {f['requests']} | {f['delivered']:.1%} | {f['pro']:.1%} "
        f"| {f['calls']:.2f} | {f['self429']} | {f['p50']:.0f} s | {f['p95']:.0f} s "
        f"| {f['p99']:.0f} s | {f['worker_s']:.0f} |"
    )


def seeds(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main(argv=None):
    known = regimes()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=sorted(known), action="append")
    parser.add_argument("--seeds", type=seeds, default=seeds("1-3"), help="e.g. 1-10")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the breaker's transitions, hundreds of them
    print(HEADER)
    clients = {
        "chain": run_chain,
        "chain, stability-first": lambda r, s: run_chain(r, s, "stability-first"),
        "naive": run_naive,
    }
    for name in args.regime or list(known):
        for client, run in clients.items():
            # Every seed's requests pooled: the percentiles are over all of them.
            pooled = [r for seed in args.seeds for r in run(known[name], seed)]
            print(row(name, client, figures(pooled)), flush=True)


if __name__ == "__main__":
    main()
