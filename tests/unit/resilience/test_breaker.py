"""The circuit breaker, against the in-memory store (and real Redis: the integration
tier runs these tests again)."""

import logging
import time

import pytest

from generator.resilience.breaker import Breaker, BreakerConfig
from generator.resilience.stores import RedisStore
from generator.resilience.taxonomy import Outcome

CONFIG = BreakerConfig(window=10, dead_after=6, probe_s=10, probe_max_s=40, probe_lease_s=100)
PRO = "gemini-3-pro-image-preview"


@pytest.fixture
def breaker(store, clock):
    return Breaker(store, clock, CONFIG)


def feed(breaker, outcomes):
    for o in outcomes:
        breaker.record(PRO, Outcome(o))


def kill(breaker):
    feed(breaker, ["unavailable"] * CONFIG.dead_after)


def test_it_a_model_that_fails_most_calls_but_still_delivers_stays_closed(breaker):
    # Nine failures in ten, as Pro in a hard episode: retrying still delivers.
    feed(breaker, (["overloaded"] * 5 + ["success"]) * 6)
    state = breaker.state(PRO)
    assert state.state == "closed"
    assert state.failure_rate == pytest.approx(0.8)
    assert breaker.admit(PRO, "t") == (True, None)


def test_it_opens_when_calls_fail_in_a_row_and_refuses_calls(breaker, clock):
    feed(breaker, ["success", "overloaded", "timeout", "network", "server_error", "unavailable"])
    assert breaker.state(PRO).state == "closed"
    breaker.record(PRO, Outcome.OVERLOADED)
    state = breaker.state(PRO)
    assert (state.state, state.streak, state.open_until) == ("open", 6, clock.now() + 10)
    assert breaker.admit(PRO, "t") == (False, clock.now() + 10)
    assert breaker.transitions()[0]["reason"] == "6 calls in a row failed"


@pytest.mark.parametrize("outcome", ["blocked", "bad_request", "rate_limited", "auth"])
def test_it_prompt_and_quota_errors_say_nothing_about_the_model(breaker, outcome):
    feed(breaker, ["overloaded"] * 5 + [outcome] * 10)
    state = breaker.state(PRO)
    assert (state.state, state.calls, state.streak) == ("closed", 5, 5)


def test_it_lets_one_probe_at_a_time_through_once_due(breaker, clock):
    kill(breaker)
    clock.advance(10)
    assert breaker.state(PRO).probe_available
    assert breaker.admit(PRO, "probe-1") == (True, None)
    admitted, retry_at = breaker.admit(PRO, "probe-2")
    assert not admitted
    assert retry_at == pytest.approx(clock.now() + 100, abs=1)
    state = breaker.state(PRO)
    assert (state.state, state.probe_available) == ("half_open", False)


def test_it_a_successful_probe_closes_it(breaker, clock):
    kill(breaker)
    clock.advance(10)
    breaker.admit(PRO, "probe")
    breaker.record(PRO, Outcome.SUCCESS, "probe")
    state = breaker.state(PRO)
    assert (state.state, state.streak) == ("closed", 0)
    assert [t["to"] for t in breaker.transitions()] == ["closed", "half_open", "open"]


def test_it_failed_probes_come_further_apart_up_to_a_cap(breaker, clock):
    kill(breaker)
    gaps = []
    for _ in range(4):
        due = breaker.state(PRO).open_until
        gaps.append(due - clock.now())
        clock.t = due
        assert breaker.admit(PRO, "probe")[0]
        breaker.record(PRO, Outcome.UNAVAILABLE, "probe")
    gaps.append(breaker.state(PRO).open_until - clock.now())
    assert gaps == [10, 20, 40, 40, 40]


def test_it_results_of_calls_from_before_it_opened_are_ignored(breaker, clock):
    kill(breaker)
    breaker.record(PRO, Outcome.SUCCESS)  # no probe lease: a late answer
    assert breaker.state(PRO).state == "open"


def test_it_a_dead_probes_lease_expires(breaker, clock):
    kill(breaker)
    clock.advance(10)
    breaker.admit(PRO, "dead-worker")
    if isinstance(breaker.store, RedisStore):
        # Redis expires keys on its own clock, not the virtual one: end the lease early.
        breaker.store.conn.pexpire(f"steadyshot:breaker:{PRO}:probe", 1)
        time.sleep(0.01)
    else:
        clock.advance(100)
    assert breaker.admit(PRO, "next")[0]


def test_it_a_probe_that_did_not_count_lets_the_next_one_go(breaker, clock):
    kill(breaker)
    clock.advance(10)
    breaker.admit(PRO, "probe")
    breaker.record(PRO, Outcome.RATE_LIMITED, "probe")  # says nothing about the model
    assert breaker.state(PRO).probe_available
    assert breaker.admit(PRO, "next")[0]


def test_it_logs_transitions(breaker, caplog):
    with caplog.at_level(logging.WARNING, logger="steadyshot.breaker"):
        kill(breaker)
    assert f"model={PRO} breaker closed -> open" in caplog.text


def test_it_rejects_probes_that_would_come_closer_together():
    with pytest.raises(ValueError, match="probe intervals"):
        BreakerConfig(probe_s=60, probe_max_s=30)
