"""Shared health: breaker and limiter together, as jobs.py and monitoring use them
(against the in-memory store, and real Redis: the integration tier runs these tests
again)."""

import pytest

from generator.resilience.breaker import BreakerConfig
from generator.resilience.health import Health
from generator.resilience.limiter import LimiterConfig, Quotas
from generator.resilience.stores import MemoryStore
from generator.resilience.taxonomy import Outcome

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
BREAKER = BreakerConfig(window=10, dead_after=4, probe_s=60, probe_max_s=600, probe_lease_s=100)


@pytest.fixture
def health(store, clock):
    quotas = {PRO: Quotas(rpm=20, ipm=20, rpd=1000), FLASH: Quotas(rpm=150)}
    return Health(store, clock, quotas, BREAKER, LimiterConfig())


def open_pro(health):
    for _ in range(4):
        assert health.acquire(PRO)[0]
        health.record(PRO, Outcome.OVERLOADED, 30_000)


def test_it_refuses_calls_to_a_model_whose_breaker_is_open(health, clock):
    open_pro(health)
    assert health.acquire(PRO) == (False, clock.now() + 60)
    snapshot = health.snapshot([PRO, FLASH])
    assert snapshot[PRO].breaker == "open"
    assert snapshot[PRO].available_at(clock.now()) == clock.now() + 60
    assert snapshot[FLASH].breaker == "closed"


def test_it_only_one_worker_probes_and_its_success_closes_the_breaker(health, clock):
    open_pro(health)
    clock.advance(60)
    assert health.snapshot([PRO])[PRO].probe_available
    other_worker = Health(health.store, clock, health.quotas, BREAKER, LimiterConfig())
    assert health.acquire(PRO)[0]
    assert not other_worker.acquire(PRO)[0]
    assert not other_worker.snapshot([PRO])[PRO].probe_available
    health.record(PRO, Outcome.SUCCESS, 25_000)
    assert health.snapshot([PRO])[PRO].breaker == "closed"
    assert [t["to"] for t in health.transitions()] == ["closed", "half_open", "open"]


def test_it_a_probe_refused_by_the_limiter_gives_its_lease_back(store, clock):
    health = Health(store, clock, {PRO: Quotas(rpm=1)}, BREAKER, LimiterConfig(safety=1.0))
    for _ in range(4):
        health.record(PRO, Outcome.OVERLOADED, 1)
    assert health.acquire(PRO) == (False, clock.now() + 60)
    clock.advance(60)
    assert health.limiter.take(PRO, Quotas(rpm=1))[0]  # another worker takes the slot
    assert not health.acquire(PRO)[0]
    assert health.snapshot([PRO])[PRO].probe_available


def test_it_a_daily_429_marks_the_model_out_of_quota_until_the_reset(health, clock):
    health.record(PRO, Outcome.RATE_LIMITED, 300, retry_after_s=20, quota_scope="day")
    _, reset = health.limiter.day_window(clock.now())
    assert health.snapshot([PRO])[PRO].out_of_quota_until == reset
    assert health.snapshot([PRO])[PRO].breaker == "closed"


def test_it_shows_monitoring_a_model_out_of_its_daily_quota_until_the_reset(health, clock):
    health.record(PRO, Outcome.RATE_LIMITED, 300, retry_after_s=20, quota_scope="day")
    _, reset = health.limiter.day_window(clock.now())
    rows = {row["model"]: row for row in health.overview()}
    assert (rows[PRO]["breaker"], rows[PRO]["out_of_quota_until"]) == ("closed", reset)
    assert rows[FLASH]["out_of_quota_until"] is None


def test_it_tells_monitoring_the_breakers_window_its_failure_rate_is_over(health):
    for outcome in (Outcome.SUCCESS, Outcome.OVERLOADED, Outcome.RATE_LIMITED, Outcome.BLOCKED):
        health.record(PRO, outcome, 1000)
    row = health.overview()[0]
    # 429s and blocked prompts say nothing about the model being down: not counted.
    assert (row["failure_rate"], row["window_calls"], row["window_size"]) == (0.5, 2, 10)


def test_it_a_per_minute_429_holds_every_worker_back_for_the_servers_delay(health, clock):
    health.record(PRO, Outcome.RATE_LIMITED, 300, retry_after_s=37, quota_scope="minute")
    assert health.snapshot([PRO])[PRO].next_free_at == clock.now() + 37
    clock.advance(37)
    assert health.snapshot([PRO])[PRO].next_free_at is None


def test_it_keeps_the_median_latency_of_successes(health):
    for ms in (10_000, 30_000, 20_000):
        health.record(FLASH, Outcome.SUCCESS, ms)
    health.record(FLASH, Outcome.TIMEOUT, 120_000)
    assert health.p50_ms(FLASH) == 20_000
    assert next(r for r in health.overview() if r["model"] == FLASH)["p50_ms"] == 20_000


def test_it_the_snapshot_shows_the_limiters_next_free_time(store, clock):
    health = Health(
        store, clock, {PRO: Quotas(rpm=1)}, BREAKER, LimiterConfig(safety=1, margin_s=0)
    )
    assert health.acquire(PRO)[0]
    assert health.snapshot([PRO])[PRO].next_free_at == clock.now() + 60


def test_it_a_per_minute_429_teaches_the_limiter_the_upstreams_smaller_quota(store, clock):
    health = Health(store, clock, {PRO: Quotas(rpm=20)}, BREAKER, LimiterConfig(margin_s=0))
    for _ in range(3):
        assert health.acquire(PRO)[0]
    health.record(
        PRO, Outcome.RATE_LIMITED, 200, retry_after_s=20, quota_scope="minute", quota_limit=2
    )
    # From now on the 2 calls a minute the 429 states (the 3 just made fill it), not the
    # catalogue's 20.
    assert health.snapshot([PRO])[PRO].next_free_at == clock.now() + 60
    assert health.overview()[0]["quota"]["rpm"] == {"used": 3, "limit": 2}


def test_it_a_per_minute_429_that_states_no_quota_halves_the_limit_at_most(clock):
    health = Health(
        MemoryStore(), clock, {PRO: Quotas(rpm=20)}, BREAKER, LimiterConfig(margin_s=0)
    )
    assert health.acquire(PRO)[0]
    health.record(PRO, Outcome.RATE_LIMITED, 200, retry_after_s=20, quota_scope="minute")
    assert health.overview()[0]["quota"]["rpm"] == {"used": 1, "limit": 10}
    assert health.snapshot([PRO])[PRO].next_free_at == clock.now() + 20  # the server's delay


class CountingStore(MemoryStore):
    """The in-memory store, counting round trips (what RedisStore pays one each for)."""

    trips = 0

    def run(self, script, keys, args):
        self.trips += 1
        return super().run(script, keys, args)

    def batch(self, ops):
        self.trips += 1
        return [getattr(MemoryStore, op[0])(self, *op[1:]) for op in ops]


def test_it_reads_the_health_of_a_whole_chain_in_one_round_trip(clock):
    store = CountingStore()
    health = Health(store, clock, {PRO: Quotas(rpm=20), FLASH: Quotas(rpm=150)}, BREAKER)
    health.snapshot([PRO, FLASH])
    assert store.trips == 1
    store.trips = 0
    assert health.acquire(PRO)[0]
    health.record(PRO, Outcome.SUCCESS, 20_000)
    assert store.trips == 3  # admission and slot, then the result
    # After a per-minute 429 the quota log is read again with what it taught (half the
    # quota at most) and the cool-down (the server's delay): two trips.
    health.record(PRO, Outcome.RATE_LIMITED, 300, retry_after_s=30, quota_scope="minute")
    store.trips = 0
    assert health.snapshot([PRO, FLASH])[PRO].next_free_at == clock.now() + 30
    assert store.trips == 2


def test_it_gives_back_a_slot_booked_after_the_snapshot_saw_none(store, clock):
    quotas = {PRO: Quotas(rpm=1)}
    health = Health(store, clock, quotas, BREAKER, LimiterConfig(margin_s=0))
    assert health.acquire(PRO)[0]  # the minute's call: the next slot is a minute ahead
    assert health.snapshot([PRO], holder="r1")[PRO].booked_at is None
    assert health.book(PRO, "r1", not_after=clock.now() + 3600) == (True, clock.now() + 60)
    health.release("r1", [PRO])
    assert health.snapshot([PRO], holder="r1")[PRO].booked_at is None
    assert health.book(PRO, "r2", not_after=clock.now() + 3600) == (True, clock.now() + 60)


def test_it_gives_back_a_slot_another_process_booked_after_this_one_looked(store, clock):
    quotas = {PRO: Quotas(rpm=1)}
    here = Health(store, clock, quotas, BREAKER, LimiterConfig(margin_s=0))
    there = Health(store, clock, quotas, BREAKER, LimiterConfig(margin_s=0))  # a worker
    assert here.acquire(PRO)[0]
    assert here.snapshot([PRO], holder="r1")[PRO].booked_at is None
    assert there.book(PRO, "r1", not_after=clock.now() + 3600) == (True, clock.now() + 60)
    here.release("r1", [PRO])  # a cancel on this process, say
    assert there.snapshot([PRO], holder="r1")[PRO].booked_at is None
