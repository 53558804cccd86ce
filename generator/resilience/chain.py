"""One step of the chain, as the worker and the simulator both run it.

The worker (generator/jobs.py) and the benchmark's simulator
(benchmarks/chain_vs_naive.py) describe a request as a `Ticket`; `next_step()` builds
the policy's `Situation` from it and the shared health, asks the policy, and takes the
chosen model's slot from the breaker and the limiter. So what the benchmark measures is
what production does: only where a Ticket comes from differs.
"""

from dataclasses import dataclass

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


def situation(ticket: Ticket, health: Health) -> Situation:
    return Situation(
        strategy=ticket.strategy,
        chain=ticket.chain,
        attempts=ticket.attempts,
        health=health.snapshot(ticket.chain),
        now=health.clock.now(),
        created=ticket.created,
        deadline=ticket.deadline,
        # Asked twice with the same history (before and after a call), the policy must
        # answer the same: the seed changes only with the number of attempts.
        seed=f"{ticket.key}:{len(ticket.attempts)}",
    )


def ask(ticket: Ticket, health: Health, config: PolicyConfig) -> Decision:
    """The policy's answer for the request as it stands (after a call, for instance)."""
    return decide(situation(ticket, health), config)


def next_step(ticket: Ticket, health: Health, config: PolicyConfig) -> Decision:
    """Ask the policy what to do and, for a call, take the chosen model's slot. The
    limiter or breaker may refuse it; the policy then sees that model's state and waits
    or downgrades instead. A model refused once is never chosen for a call now again, so
    one try per model in the chain and one more suffice; a CALL returned holds its slot,
    and if every try was refused the request waits a moment instead."""
    decision = ask(ticket, health, config)
    for _ in range(len(ticket.chain) + 1):
        if decision.action != Action.CALL:
            return decision
        if health.acquire(decision.model)[0]:
            return decision
        decision = ask(ticket, health, config)
    if decision.action == Action.CALL:
        return Decision(
            Action.WAIT,
            model=decision.model,
            at=health.clock.now() + 1,
            reason=Reason(Code.ALL_BUSY),
        )
    return decision
