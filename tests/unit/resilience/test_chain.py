"""One step of the chain: the policy, then the shared breaker and limiter."""

from generator.resilience import chain
from generator.resilience.breaker import BreakerConfig
from generator.resilience.clock import VirtualClock
from generator.resilience.health import Health
from generator.resilience.limiter import LimiterConfig, Quotas
from generator.resilience.policy import Action, AttemptRecord, Code, PolicyConfig, Reason
from generator.resilience.stores import MemoryStore
from generator.resilience.taxonomy import Outcome

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
CONFIG = PolicyConfig()


def ticket(clock, attempts=()):
    return chain.Ticket(
        key="req-1",
        strategy="quality-first",
        chain=(PRO, FLASH),
        created=clock.now(),
        deadline=None,
        attempts=tuple(attempts),
    )


def health_with_one_pro_call_a_minute(clock):
    quotas = {PRO: Quotas(rpm=1), FLASH: Quotas(rpm=150)}
    return Health(
        MemoryStore(), clock, quotas, BreakerConfig(), LimiterConfig(safety=1, margin_s=0)
    )


def test_it_calls_the_primary_and_holds_its_slot():
    clock = VirtualClock()
    health = health_with_one_pro_call_a_minute(clock)
    decision = chain.next_step(ticket(clock), health, CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, PRO)
    assert health.snapshot([PRO])[PRO].next_free_at == clock.now() + 60


def test_it_asks_the_policy_again_when_the_limiter_refuses_its_call():
    clock = VirtualClock()
    health = health_with_one_pro_call_a_minute(clock)
    acquire = health.acquire

    def another_worker_first(model, holder=""):
        # Between the policy's look at the limiter and this call, another worker took
        # Pro's only slot of the minute.
        if model == PRO:
            health.limiter.take(PRO, health.quotas[PRO])
        return acquire(model, holder)

    health.acquire = another_worker_first
    decision = chain.next_step(ticket(clock), health, CONFIG)
    # Asked again, the policy waits for Pro's next slot, which its wait limit allows.
    assert (decision.action, decision.model, decision.at) == (Action.WAIT, PRO, clock.now() + 60)
    assert health.snapshot([PRO], holder="req-1")[PRO].booked_at == clock.now() + 60


def test_it_waits_a_moment_when_every_try_is_refused():
    clock = VirtualClock()
    health = health_with_one_pro_call_a_minute(clock)
    health.acquire = lambda model, holder="": (False, None)
    decision = chain.next_step(ticket(clock), health, CONFIG)
    assert (decision.action, decision.model, decision.at) == (Action.WAIT, PRO, clock.now() + 1)
    assert decision.reason == Reason(Code.ALL_BUSY)


def test_it_asked_twice_with_the_same_history_it_answers_the_same():
    clock = VirtualClock()
    health = health_with_one_pro_call_a_minute(clock)
    failed = AttemptRecord(PRO, Outcome.OVERLOADED, clock.now())
    first = chain.ask(ticket(clock, [failed]), health, CONFIG)
    assert first.action == Action.WAIT
    assert chain.ask(ticket(clock, [failed]), health, CONFIG) == first


def deadline_ticket(clock, deadline_in):
    return chain.Ticket(
        key="req-1",
        strategy="quality-first",
        chain=(PRO, FLASH),
        created=clock.now(),
        deadline=clock.now() + deadline_in,
        attempts=(),
    )


def test_it_a_request_that_waits_for_quota_books_its_slot():
    clock = VirtualClock()
    health = health_with_one_pro_call_a_minute(clock)
    assert health.acquire(PRO)[0]  # this minute's slot is gone
    decision = chain.next_step(deadline_ticket(clock, 600), health, CONFIG)
    assert (decision.action, decision.model, decision.at) == (Action.WAIT, PRO, clock.now() + 60)
    assert health.snapshot([PRO], holder="req-1")[PRO].booked_at == clock.now() + 60
    # The next request queues behind it.
    assert health.snapshot([PRO])[PRO].next_free_at == clock.now() + 120
    clock.advance(60)
    decision = chain.next_step(deadline_ticket(clock, 540), health, CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, PRO)


def test_it_a_request_that_no_longer_waits_for_its_slot_gives_it_back():
    clock = VirtualClock()
    health = health_with_one_pro_call_a_minute(clock)
    assert health.acquire(PRO)[0]
    chain.next_step(deadline_ticket(clock, 600), health, CONFIG)
    health.breaker.config = BreakerConfig(dead_after=1)
    health.record(PRO, Outcome.OVERLOADED, 1000)  # Pro's breaker opens meanwhile
    decision = chain.next_step(deadline_ticket(clock, 600), health, CONFIG)
    assert decision.book_until is None  # it waits for the breaker now, not for the quota
    assert health.snapshot([PRO], holder="req-1")[PRO].booked_at is None
    assert health.snapshot([PRO])[PRO].next_free_at == clock.now() + 60  # free for others


def test_it_a_step_releases_only_the_models_that_may_hold_its_booking():
    clock = VirtualClock()
    health = health_with_one_pro_call_a_minute(clock)
    released = []
    health.release = lambda holder, models: released.append(list(models))
    decision = chain.next_step(ticket(clock), health, CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, PRO)
    # Pro's take may have used a booking; Flash, which the snapshot saw unbooked and no
    # take asked for, costs no release.
    assert released == [[PRO]]
