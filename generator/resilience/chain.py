"""One step of the chain, as the worker and the simulator both run it.

The worker (generator/jobs.py) and the benchmark's simulator
(benchmarks/chain_vs_naive.py) describe a request as a `Ticket`; `next_step()` builds
the policy's `Situation` from it and the shared health, asks the policy, and takes the
chosen model's slot from the breaker and the limiter. So what the benchmark measures is
what production does: only where a Ticket comes from differs.
"""

from dataclasses import dataclass, replace

from generator.resilience.health import Health
from generator.resilience.policy import (
    Action,
    AttemptRecord,
    Code,
    Decision,
    PolicyConfig,
    Reason,
    Situation,
    decide,
)


@dataclass(frozen=True)
class Ticket:
    """What the chain needs to know about a request, wherever it is kept."""

    key: str  # the request's id: seeds its jitter, different per request, reproducible
    strategy: str
    chain: tuple[str, ...]
    created: float
    deadline: float | None
    attempts: tuple[AttemptRecord, ...]
    # Quality-first: until when its first model may be waited for (None: the default).
    wait_until: float | None = None


def situation(ticket: Ticket, health: Health) -> Situation:
    return Situation(
        strategy=ticket.strategy,
        chain=ticket.chain,
        attempts=ticket.attempts,
        health=health.snapshot(ticket.chain, holder=ticket.key),
        now=health.clock.now(),
        created=ticket.created,
        deadline=ticket.deadline,
        wait_until=ticket.wait_until,
        # Asked twice with the same history (before and after a call), the policy must
        # answer the same: the seed changes only with the number of attempts.
        seed=f"{ticket.key}:{len(ticket.attempts)}",
    )


def ask(ticket: Ticket, health: Health, config: PolicyConfig) -> Decision:
    """The policy's answer for the request as it stands (after a call, for instance)."""
    return decide(situation(ticket, health), config)


def next_step(ticket: Ticket, health: Health, config: PolicyConfig) -> Decision:
    """Ask the policy what to do and take what it needs: for a call, the chosen model's
    slot now (the request's own booked slot if it is due); for a wait on a model's
    quota, a booked slot in the future. The breaker or the limiter may refuse, or book
    a later slot than the policy may wait for; the policy then sees that model's new
    state and waits or downgrades instead. A model refused once is never chosen again
    in the same way, so one try per model in the chain and one more suffice; if every
    try was refused the request waits a moment instead. A slot the request booked on
    another model than the one it goes on with is given back."""
    seen = situation(ticket, health)
    decision = decide(seen, config)
    for _ in range(len(ticket.chain) + 1):
        settled = _take(ticket, health, decision)
        if settled is not None:
            break
        seen = situation(ticket, health)
        decision = decide(seen, config)
    else:
        settled = _take(ticket, health, decision) or Decision(
            Action.WAIT,
            model=decision.model,
            at=health.clock.now() + 1,
            reason=Reason(Code.ALL_BUSY),
        )
    keep = {settled.model} if settled.book_until is not None else set()
    # Only a model that may hold the request's booking needs a release: one the last
    # snapshot saw booked, or the one the last take asked for since (a refused take may
    # move a booking). A step with none to give back pays no round trip for it.
    booked = {m for m, h in seen.health.items() if h.booked_at is not None}
    if _takes_a_slot(decision):
        booked.add(decision.model)
    health.release(ticket.key, [m for m in ticket.chain if m in booked and m not in keep])
    return settled


def _takes_a_slot(decision: Decision) -> bool:
    return decision.action == Action.CALL or (
        decision.action == Action.WAIT and decision.book_until is not None
    )


def _take(ticket: Ticket, health: Health, decision: Decision) -> Decision | None:
    """The decision once its slot is held, or None if the slot was refused."""
    if decision.action == Action.CALL:
        return decision if health.acquire(decision.model, ticket.key)[0] else None
    if decision.action == Action.WAIT and decision.book_until is not None:
        booked, slot = health.book(decision.model, ticket.key, decision.book_until)
        return replace(decision, at=max(decision.at, slot)) if booked else None
    return decision
