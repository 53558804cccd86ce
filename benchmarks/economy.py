"""Economy against none: a day of traffic with peak hours in the simulator.

A day (and the night after it, for the deadlines) on a virtual clock. Requests arrive
all day, more in office hours (08-20 UTC); a share of them is patient, needed by a
deadline 6-18 hours away. The upstream is the sandbox's fault model
(generator/upstream/sandbox/profiles.py) switched by the hour as docs/upstream.md
describes the day: `peak` at 12-15, 16-19 and 01-03 UTC, `calm` otherwise, and at 16-19
the provider's shared capacity for Nano Banana Pro shrinks to PEAK_PRO_RPM requests a
minute, below the catalogue's 20: calls beyond it get 429s.

Three ways to serve the same arrivals, by the same 8 workers:
- **no economy**: every request is quality-first (today's choice for everyone);
- **economy (Batch mode)**: the patient ones are economy requests; the batcher's rules
  (generator/batching.py: batches per model closed at BATCH_MAX_REQUESTS or
  BATCH_MAX_AGE_S, polled every BATCH_POLL_S, a request leaving a batch still running
  ECONOMY_DIRECT_MARGIN_S before its deadline) against the sandbox's Batch mode
  behaviour of the profile in force (pending and running times, failed lines), at the
  Batch price; a failed line or a left batch goes to the chain;
- **economy (off-peak)**: Batch mode off: each patient request waits for the calmest
  hour before its deadline (generator/resilience/offpeak.py, on docs/upstream.md's prior)
  and then runs through the chain.

Every direct step is the production code: `generator.resilience.chain.next_step` and
`ask` (the policy, the breaker and the limiter on the in-memory store), as in
benchmarks/chain_vs_naive.py, whose upstream model this reuses.

    python -m benchmarks.economy --seeds 1-3 --patient 0.4
"""

import argparse
import heapq
import itertools
import logging
import math
import random
import sys
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chain_vs_naive import CATALOGUE, LIMITER, T0, Regime, Upstream
from generator.resilience import chain
from generator.resilience.breaker import BreakerConfig
from generator.resilience.catalogue import DEFAULT_MODELS
from generator.resilience.clock import VirtualClock
from generator.resilience.health import Health
from generator.resilience.offpeak import calmest_start, learned_rates
from generator.resilience.policy import Action, AttemptRecord, PolicyConfig
from generator.resilience.stores import MemoryStore
from generator.resilience.strategies import StrategyName
from generator.resilience.taxonomy import Outcome
from generator.upstream.sandbox.profiles import FLASH_ID, Quota, builtin_profiles

PRO, FLASH = "gemini-3-pro-image-preview", FLASH_ID
CHAIN = (PRO, FLASH)
DAY0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
HOUR = 3600.0
PEAK_HOURS = (16, 19)  # where calls and 429s are counted: the worst hours of the day
# What is left to us of the project's Pro quota at 16-19 UTC, when the other clients of
# the project (or the provider's shared capacity) take the rest: calls beyond it get 429.
PEAK_PRO_RPM = 8
WORKERS = 8
# The settings' defaults (config/settings.py), in seconds.
BATCH_MAX_REQUESTS = 100
BATCH_MAX_AGE_S = 600.0
BATCH_POLL_S = 60.0
BATCH_TICK_S = 30.0
DIRECT_MARGIN_S = 1800.0
# A paid tier with room for a day of this traffic: the catalogue's 1,000 Pro requests a
# day would run out by mid-morning and decide everything on their own.
QUOTAS = {**CATALOGUE, PRO: replace(CATALOGUE[PRO], rpd=10_000)}
PRICE = {m: DEFAULT_MODELS[m].price("1K") for m in CHAIN}
BATCH_PRICE = {m: DEFAULT_MODELS[m].batch_price("1K") for m in CHAIN}


def arrival_rate(hour: int) -> float:
    """Requests a minute: office hours busy, nights quiet."""
    return 6.0 if 8 <= hour < 20 else 1.5


def day_regime() -> Regime:
    """The upstream, hour by hour, for two days (deadlines run into the second)."""
    profiles = builtin_profiles()
    calm, peak = profiles["calm"], profiles["peak"]
    pro = peak.behaviour(PRO)
    squeezed = replace(peak, name="peak-squeezed")
    squeezed = replace(
        squeezed, models={**peak.models, PRO: replace(pro, quota=Quota(rpm=PEAK_PRO_RPM))}
    )
    phases = []
    for hour in range(48):
        h = hour % 24
        if PEAK_HOURS[0] <= h < PEAK_HOURS[1]:
            profile = squeezed
        elif 12 <= h < 15 or 1 <= h < 3:
            profile = peak
        else:
            profile = calm
        # Upstream counts its phases from chain_vs_naive's T0 (15:00 that day).
        phases.append((DAY0 - T0 + hour * HOUR, profile))
    return Regime("day", "a day with peak hours", tuple(phases), 24 * 60, 0.0, WORKERS, QUOTAS)


@dataclass
class Request:
    submitted: float
    patient: bool
    due: float | None = None  # when a patient request is needed by
    deadline: float | None = None  # the deadline it is submitted with (economy only)
    strategy: str = StrategyName.QUALITY_FIRST
    route: str = "direct"
    attempts: list = field(default_factory=list)
    done: float | None = None
    model: str = ""
    cost: Decimal = Decimal(0)
    via_batch: bool = False
    started: bool = False
    over: bool = False  # ended (delivered or given up)
    batch: int | None = None


def arrivals(seed: int, patient_share: float) -> list[Request]:
    rng = random.Random(f"{seed}:arrivals")
    requests, t = [], DAY0
    while True:
        hour = int((t - DAY0) // HOUR)
        if hour >= 24:
            return requests
        gap = rng.expovariate(arrival_rate(hour) / 60)
        if int((t + gap - DAY0) // HOUR) != hour:
            t = DAY0 + (hour + 1) * HOUR  # a new hour, a new rate
            continue
        t += gap
        patient = rng.random() < patient_share
        due = t + rng.uniform(6, 18) * HOUR if patient else None
        requests.append(Request(submitted=t, patient=patient, due=due))


@dataclass
class Batch:
    members: list[int]
    result_at: float  # when the batcher sees its end (the next poll after it)
    state: str  # succeeded | expired
    failed_lines: set = field(default_factory=set)


class Day:
    """One scenario: `mode` is "none", "batch" or "off-peak"."""

    def __init__(self, seed: int, mode: str, patient_share: float):
        self.seed, self.mode = seed, mode
        self.clock = VirtualClock(DAY0)
        self.upstream = Upstream(day_regime(), seed)
        self.health = Health(MemoryStore(), self.clock, QUOTAS, BreakerConfig(), LIMITER)
        self.config = PolicyConfig()
        self.requests = arrivals(seed, patient_share)
        self.rng = random.Random(f"{seed}:batches")
        self.regime = day_regime()
        self.events: list = []
        self.seq = itertools.count()
        self.ready: list[int] = []
        self.free = WORKERS
        self.calls: list[tuple[float, str, Outcome]] = []  # (time, model, outcome)
        self.batches: list[Batch] = []
        self.waiting_for_batch: list[int] = []

    def push(self, at: float, kind: str, index: int = -1) -> None:
        heapq.heappush(self.events, (at, next(self.seq), kind, index))

    # --- admission ----------------------------------------------------------------------

    def admit(self, i: int, r: Request) -> None:
        if not r.patient or self.mode == "none":
            self.push(r.submitted, "ready", i)
            return
        r.strategy, r.deadline = StrategyName.ECONOMY, r.due
        if self.mode == "batch":
            r.route = "batch"
            self.waiting_for_batch.append(i)
            return
        r.route = "off_peak"
        spread = self.rng.random()
        start = calmest_start(
            r.submitted, r.deadline - DIRECT_MARGIN_S, learned_rates(None), spread
        )
        # Released by the batcher's next tick at or after its hour.
        self.push(math.ceil(start / BATCH_TICK_S) * BATCH_TICK_S, "ready", i)

    # --- the batcher ----------------------------------------------------------------------

    def tick(self, t: float) -> None:
        waiting = [i for i in self.waiting_for_batch if not self.requests[i].over]
        late = [i for i in waiting if self.requests[i].deadline <= t + DIRECT_MARGIN_S]
        for i in late:
            self.go_direct(i, t)
        waiting = [i for i in waiting if i not in late]
        while waiting and (
            len(waiting) >= BATCH_MAX_REQUESTS
            or self.requests[waiting[0]].submitted <= t - BATCH_MAX_AGE_S
        ):
            chunk, waiting = waiting[:BATCH_MAX_REQUESTS], waiting[BATCH_MAX_REQUESTS:]
            self.send(chunk, t)
        self.waiting_for_batch = waiting

    def send(self, members: list[int], t: float) -> None:
        """The sandbox's Batch mode for the profile in force when the batch is sent."""
        behaviour = next(p for s, p in reversed(self.regime.phases) if T0 + s <= t).batch
        runs_at = t + self.rng.uniform(*behaviour.pending_s)
        ends_at = runs_at + self.rng.uniform(*behaviour.running_s)
        state = "succeeded"
        if ends_at >= t + behaviour.expire_after_s:
            state, ends_at = "expired", t + behaviour.expire_after_s
        seen = t + math.ceil((ends_at - t) / BATCH_POLL_S) * BATCH_POLL_S
        failed = {i for i in members if self.rng.random() < behaviour.line_failure}
        batch = Batch(members, seen, state, failed)
        self.batches.append(batch)
        number = len(self.batches) - 1
        for i in members:
            self.requests[i].batch = number
            rescue = self.requests[i].deadline - DIRECT_MARGIN_S
            if rescue < seen:
                self.push(max(rescue, t), "rescue", i)
        self.push(seen, "batch", number)

    def batch_ended(self, number: int, t: float) -> None:
        batch = self.batches[number]
        for i in batch.members:
            r = self.requests[i]
            if r.route != "batch" or r.over:
                continue  # it left the batch (its deadline came close)
            if batch.state == "succeeded" and i not in batch.failed_lines:
                r.done, r.model, r.over, r.via_batch = t, PRO, True, True
                r.cost = BATCH_PRICE[PRO]
            else:
                if i in batch.failed_lines:
                    r.attempts.append(AttemptRecord(PRO, Outcome.OVERLOADED, t))
                self.go_direct(i, t)

    def go_direct(self, i: int, t: float) -> None:
        self.requests[i].route = "direct"
        self.push(t, "ready", i)

    # --- the workers ----------------------------------------------------------------------

    def ticket(self, i: int, r: Request) -> chain.Ticket:
        quality = r.strategy == StrategyName.QUALITY_FIRST
        return chain.Ticket(
            key=str(i),
            strategy=r.strategy,
            chain=CHAIN,
            created=r.submitted,
            deadline=r.deadline,
            attempts=tuple(r.attempts),
            wait_until=r.submitted + self.config.patience_s if quality else None,
        )

    def step(self, i: int, t: float) -> None:
        r = self.requests[i]
        r.started = True
        decision = chain.next_step(self.ticket(i, r), self.health, self.config)
        if decision.action == Action.WAIT:
            self.push(max(decision.at, t), "ready", i)
        elif decision.action == Action.CALL:
            verdict = self.upstream.call(decision.model, t)
            r.pending = (decision.model, verdict)
            self.free -= 1
            self.push(t + verdict.latency_s, "done", i)
        else:
            r.over = True

    def called(self, i: int, t: float) -> None:
        r = self.requests[i]
        model, verdict = r.pending
        outcome = Outcome(verdict.outcome)
        self.calls.append((t - verdict.latency_s, model, outcome))
        retry_after = verdict.retry_s if outcome == Outcome.RATE_LIMITED else None
        scope = {"rpd": "day"}.get(verdict.quota_dim, "minute") if retry_after else ""
        self.health.record(
            model, outcome, int(verdict.latency_s * 1000), retry_after_s=retry_after, quota_scope=scope
        )  # fmt: skip
        r.attempts.append(AttemptRecord(model, outcome, t, retry_after, scope))
        if outcome == Outcome.SUCCESS:
            r.done, r.model, r.over = t, model, True
            # What the provider bills: the direct price (the team is charged no more than
            # the Batch price for an economy request; the difference is ours).
            r.cost = PRICE[model]
            return
        decision = chain.ask(self.ticket(i, r), self.health, self.config)
        if decision.action == Action.GIVE_UP:
            r.over = True
            return
        self.push(decision.at if decision.action == Action.WAIT else t, "ready", i)

    def run(self) -> "Day":
        for i, r in enumerate(self.requests):
            self.admit(i, r)
        if self.mode == "batch":
            t = DAY0
            while t < DAY0 + 48 * HOUR:
                self.push(t, "tick")
                t += BATCH_TICK_S
        while self.events:
            t, _, kind, i = heapq.heappop(self.events)
            self.clock.t = t
            if kind == "done":
                self.free += 1
                self.called(i, t)
            elif kind == "tick":
                self.tick(t)
            elif kind == "batch":
                self.batch_ended(i, t)
            elif kind == "rescue":
                r = self.requests[i]
                if r.route == "batch" and not r.over:
                    self.go_direct(i, t)
            elif not self.requests[i].over:
                if self.requests[i].started:
                    self.ready.insert(0, i)  # a started request's next step goes first
                else:
                    self.ready.append(i)
            while self.ready and self.free:
                self.step(self.ready.pop(0), t)
        return self


def figures(days: list[Day]) -> dict:
    requests = [r for d in days for r in d.requests]
    done = [r for r in requests if r.done is not None]
    patient = [r for r in requests if r.patient]
    urgent = [r for r in requests if not r.patient]
    peak = [
        c
        for d in days
        for c in d.calls
        if DAY0 + PEAK_HOURS[0] * HOUR <= c[0] < DAY0 + PEAK_HOURS[1] * HOUR
    ]

    def share_pro(rows):
        delivered = [r for r in rows if r.done is not None]
        return sum(r.model == PRO for r in delivered) / max(len(delivered), 1)

    def p(rows, q):
        times = sorted(r.done - r.submitted for r in rows if r.done is not None)
        return times[min(len(times) - 1, int(q * len(times)))] if times else math.nan

    # A patient request is needed by its due time, whatever it was submitted as.
    met = [r for r in patient if r.done is not None and r.done <= r.due]
    return {
        "requests": len(requests),
        "delivered": len(done) / len(requests),
        "cost": float(sum(r.cost for r in done)) / max(len(done), 1),
        "pro": share_pro(requests),
        "pro_urgent": share_pro(urgent),
        "pro_patient": share_pro(patient),
        "batch": sum(r.via_batch for r in done) / max(len(done), 1),
        "calls": sum(len(d.calls) for d in days),
        "peak_calls": len(peak),
        "peak_429": sum(c[2] == Outcome.RATE_LIMITED for c in peak),
        "met": len(met) / max(len(patient), 1),
        "urgent_p50": p(urgent, 0.5),
        "urgent_p95": p(urgent, 0.95),
    }


HEADER = (
    "| patient requests as | requests | delivered | cost / image | Pro share (urgent, patient) "
    "| via Batch mode | upstream calls | calls at 16-19 UTC | 429s at 16-19 UTC "
    "| patient by deadline | urgent p50 / p95 |\n|---|---|---|---|---|---|---|---|---|---|---|"
)
MODES = {
    "none": "quality-first",
    "batch": "economy (Batch mode)",
    "off-peak": "economy (off-peak)",
}


def row(mode: str, f: dict) -> str:
    return (
        f"| {MODES[mode]} | {f['requests']} | {f['delivered']:.1%} | ${f['cost']:.4f} "
        f"| {f['pro']:.1%} ({f['pro_urgent']:.1%}, {f['pro_patient']:.1%}) | {f['batch']:.1%} "
        f"| {f['calls']} | {f['peak_calls']} | {f['peak_429']} | {f['met']:.1%} "
        f"| {f['urgent_p50']:.0f} s / {f['urgent_p95']:.0f} s |"
    )


def seeds(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-3", help="a seed or a range, e.g. 1-3")
    parser.add_argument("--patient", type=float, default=0.4, help="share of patient requests")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the breakers' transitions
    print(f"{len(seeds(args.seeds))} day(s), {args.patient:.0%} patient, {WORKERS} workers")
    print(HEADER)
    for mode in MODES:
        days = [Day(s, mode, args.patient).run() for s in seeds(args.seeds)]
        print(row(mode, figures(days)), flush=True)


if __name__ == "__main__":
    main()
