"""The circuit breaker, against real Redis and the in-memory store."""

import logging
import time

import pytest

from generator.resilience.breaker import Breaker, BreakerConfig
from generator.resilience.stores import RedisStore
from generator.resilience.taxonomy import Outcome

CONFIG = BreakerConfig(
    window=10,
    min_calls=4,
    failure_rate=0.6,
    open_s=60,
    open_max_s=500,
    cooldown_s=600,
    probe_lease_s=100,
)
PRO = "gemini-3-pro-image-preview"


@pytest.fixture
def breaker(store, clock):
    return Breaker(store, clock, CONFIG)


def feed(breaker, outcomes):
    for o in outcomes:
        breaker.record(PRO, Outcome(o))


def test_it_stays_closed_below_the_failure_rate(breaker):
    # 45 % failures, as Pro at peak: retries work, the breaker must not flap.
    feed(breaker, ["overloaded", "success", "overloaded", "success", "success"] * 4)
    assert breaker.state(PRO).state == "closed"
    assert breaker.admit(PRO, "t") == (True, None)


def test_it_gives_no_verdict_below_the_minimum_number_of_calls(breaker):
    feed(breaker, ["overloaded"] * 3)
    assert breaker.state(PRO).state == "closed"


def test_it_opens_on_the_failure_rate_and_refuses_calls(breaker, clock):
    feed(breaker, ["success", "overloaded", "success", "timeout", "network"])
    state = breaker.state(PRO)
    assert state.state == "open"
    assert state.open_until == clock.now() + 60
    assert breaker.admit(PRO, "t") == (False, clock.now() + 60)
    assert breaker.transitions()[0]["reason"] == "3 of the last 5 calls failed"


@pytest.mark.parametrize("outcome", ["blocked", "bad_request", "rate_limited", "auth"])
def test_prompt_and_quota_errors_do_not_count_as_failures(breaker, outcome):
    feed(breaker, [outcome] * 10)
    assert breaker.state(PRO).state == "closed"
    assert breaker.state(PRO).calls == 0


def test_it_lets_exactly_one_probe_through_after_the_open_time(breaker, clock):
    feed(breaker, ["overloaded"] * 4)
    clock.advance(60)
    assert breaker.state(PRO).probe_available
    assert breaker.admit(PRO, "probe-1") == (True, None)
    admitted, retry_at = breaker.admit(PRO, "probe-2")
    assert not admitted
    assert retry_at == pytest.approx(clock.now() + 100, abs=1)
    state = breaker.state(PRO)
    assert (state.state, state.probe_available) == ("half_open", False)


def test_a_successful_probe_closes_it(breaker, clock):
    feed(breaker, ["overloaded"] * 4)
    clock.advance(60)
    breaker.admit(PRO, "probe")
    breaker.record(PRO, Outcome.SUCCESS, "probe")
    assert breaker.state(PRO).state == "closed"
    assert [t["to"] for t in breaker.transitions()] == ["closed", "half_open", "open"]


def test_a_failed_probe_reopens_it_for_longer(breaker, clock):
    feed(breaker, ["overloaded"] * 4)
    clock.advance(60)
    breaker.admit(PRO, "probe")
    breaker.record(PRO, Outcome.OVERLOADED, "probe")
    state = breaker.state(PRO)
    assert (state.state, state.open_until) == ("open", clock.now() + 120)


def test_it_reopens_for_longer_when_failing_soon_after_closing(breaker, clock):
    feed(breaker, ["overloaded"] * 4)
    clock.advance(60)
    breaker.admit(PRO, "probe")
    breaker.record(PRO, Outcome.SUCCESS, "probe")
    feed(breaker, ["overloaded"] * 4)
    assert breaker.state(PRO).open_until == clock.now() + 120


def test_results_of_calls_from_before_it_opened_are_ignored(breaker, clock):
    feed(breaker, ["overloaded"] * 4)
    clock.advance(60)
    breaker.record(PRO, Outcome.SUCCESS)  # no probe lease: a late answer
    assert breaker.state(PRO).state == "open"


def test_a_dead_probes_lease_expires(breaker, clock):
    feed(breaker, ["overloaded"] * 4)
    clock.advance(60)
    breaker.admit(PRO, "dead-worker")
    if isinstance(breaker.store, RedisStore):
        # Redis expires keys on its own clock, not the virtual one: end the lease early.
        breaker.store.conn.pexpire(f"steadyshot:breaker:{PRO}:probe", 1)
        time.sleep(0.01)
    else:
        clock.advance(100)
    assert breaker.admit(PRO, "next")[0]


def test_it_logs_transitions(breaker, caplog):
    with caplog.at_level(logging.WARNING, logger="steadyshot.breaker"):
        feed(breaker, ["overloaded"] * 4)
    assert f"model={PRO} breaker closed -> open" in caplog.text


def test_it_rejects_a_minimum_above_the_window():
    with pytest.raises(ValueError, match="minimum"):
        BreakerConfig(window=5, min_calls=6)
