"""The retry and downgrade policy: pure, no database, network or sleep."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.resilience.policy import (
    NON_RETRYABLE,
    Action,
    AttemptRecord,
    Code,
    ModelHealth,
    PolicyConfig,
    Reason,
    Situation,
    decide,
)
from generator.resilience.strategies import STRATEGIES
from generator.resilience.taxonomy import Outcome

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
GPT = "gpt-image-1"
QUALITY = (PRO, FLASH, GPT)
STABILITY = (FLASH, GPT, PRO)
T0 = 1_700_000_000.0
CONFIG = PolicyConfig()


def situation(
    attempts=(),
    *,
    strategy="quality-first",
    chain=QUALITY,
    health=None,
    now=None,
    deadline=None,
    wait_until=None,
):
    attempts = tuple(attempts)
    if now is None:
        now = attempts[-1].at if attempts else T0
    return Situation(
        strategy=strategy,
        chain=chain,
        attempts=attempts,
        health=health or {},
        now=now,
        created=T0,
        deadline=deadline,
        seed="req-1",
        wait_until=wait_until,
    )


def attempt(model, outcome, at=T0 + 30, **kw):
    return AttemptRecord(model=model, outcome=Outcome(outcome), at=at, **kw)


def test_it_calls_the_primary_first():
    decision = decide(situation(), CONFIG)
    assert (decision.action, decision.model, decision.downgraded_from) == (Action.CALL, PRO, "")


@pytest.mark.parametrize("outcome", ["blocked", "bad_request", "auth"])
def test_it_never_retries_a_non_retryable_outcome(outcome):
    decision = decide(situation([attempt(PRO, outcome)]), CONFIG)
    assert decision.action == Action.GIVE_UP
    assert decision.outcome == Outcome(outcome)
    assert decision.reason == Reason(Code.NOT_RETRIED, PRO, Outcome(outcome))


def test_it_downgrades_at_once_when_the_model_is_not_found():
    decision = decide(situation([attempt(PRO, "not_found")]), CONFIG)
    assert (decision.action, decision.model, decision.downgraded_from) == (Action.CALL, FLASH, PRO)
    assert decision.reason == Reason(Code.DOWNGRADE, FLASH, cause=Reason(Code.NOT_FOUND, PRO))


def test_it_retries_an_overloaded_model_after_a_jittered_wait():
    decision = decide(situation([attempt(PRO, "overloaded")]), CONFIG)
    assert decision.action == Action.WAIT
    assert decision.model == PRO
    assert T0 + 30 <= decision.at <= T0 + 30 + CONFIG.backoff_base_s + CONFIG.min_wait_s


def test_it_a_retry_whose_backoff_has_run_out_goes_now_and_says_why():
    # The step ran late (a busy queue): the backoff is over, nothing else holds Pro.
    healthy = {PRO: ModelHealth(PRO, success_rate=0.5, window_calls=2)}
    s = situation([attempt(PRO, "overloaded")], health=healthy, now=T0 + 300)
    decision = decide(s, CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, PRO)
    assert decision.reason == Reason(Code.BACKOFF, PRO, Outcome.OVERLOADED)


def test_it_gives_the_same_answer_when_asked_again_with_the_same_history():
    s = situation([attempt(PRO, "overloaded")])
    first = decide(s, CONFIG)
    assert decide(s, CONFIG) == first
    # And when the wait is over, it calls.
    later = decide(situation([attempt(PRO, "overloaded")], now=first.at), CONFIG)
    assert (later.action, later.model) == (Action.CALL, PRO)


def test_it_downgrades_quality_first_after_the_per_model_budget():
    n = CONFIG.quality.attempts_per_model
    attempts = [attempt(PRO, "overloaded", at=T0 + 2 * i) for i in range(1, n + 1)]
    decision = decide(situation(attempts, now=T0 + 2 * n), CONFIG)
    assert (decision.action, decision.model, decision.downgraded_from) == (Action.CALL, FLASH, PRO)
    assert decision.reason.cause == Reason(Code.FAILED_TIMES, PRO, Outcome.OVERLOADED, count=n)


def test_it_the_last_model_uses_the_rest_of_the_budget():
    n = CONFIG.attempt_budget
    attempts = [attempt(PRO, "overloaded", at=T0 + 10 * i) for i in range(1, n)]
    decision = decide(situation(attempts, chain=(PRO,), now=T0 + 500), CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, PRO)
    attempts.append(attempt(PRO, "overloaded", at=T0 + 10 * n))
    decision = decide(situation(attempts, chain=(PRO,), now=T0 + 500), CONFIG)
    assert decision.action == Action.GIVE_UP
    assert decision.outcome == Outcome.OVERLOADED
    assert decision.reason == Reason(Code.ATTEMPTS_USED, PRO, Outcome.OVERLOADED, count=n)


def test_it_honours_the_servers_retry_delay():
    last = attempt(PRO, "rate_limited", retry_after_s=37.0, quota_scope="minute")
    decision = decide(situation([last]), CONFIG)
    assert (decision.action, decision.model, decision.at) == (Action.WAIT, PRO, last.at + 37.0)


def test_it_downgrades_when_the_retry_delay_is_too_long():
    last = attempt(PRO, "rate_limited", retry_after_s=300.0, quota_scope="minute")
    decision = decide(situation([last]), CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, FLASH)


def test_it_a_patient_request_waits_out_a_long_retry_delay_before_its_deadline():
    last = attempt(PRO, "rate_limited", retry_after_s=300.0, quota_scope="minute")
    decision = decide(situation([last], deadline=T0 + 3600), CONFIG)
    assert (decision.action, decision.model, decision.at) == (Action.WAIT, PRO, last.at + 300.0)


def test_it_a_daily_quota_goes_straight_to_the_next_model():
    last = attempt(PRO, "rate_limited", retry_after_s=5.0, quota_scope="day")
    decision = decide(situation([last]), CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, FLASH)
    assert decision.reason.cause == Reason(Code.DAILY_QUOTA, PRO)


def test_it_an_open_breaker_sends_quality_first_to_the_next_model():
    health = {PRO: ModelHealth(PRO, breaker="open", open_until=T0 + 60)}
    decision = decide(situation(health=health), CONFIG)
    assert (decision.action, decision.model, decision.downgraded_from) == (Action.CALL, FLASH, PRO)
    assert decision.reason.cause == Reason(Code.BREAKER_OPEN, PRO)


def test_it_a_probe_able_breaker_lets_the_call_through():
    health = {PRO: ModelHealth(PRO, breaker="open", open_until=T0 - 1, probe_available=True)}
    assert decide(situation(health=health), CONFIG).model == PRO


def test_it_a_dead_primary_is_not_waited_for_even_with_a_deadline():
    health = {PRO: ModelHealth(PRO, breaker="open", open_until=T0 + 20)}
    decision = decide(situation(health=health, deadline=T0 + 3600), CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, FLASH)
    assert decision.reason.cause == Reason(Code.BREAKER_OPEN, PRO)


def test_it_quality_first_books_a_quota_slot_within_its_wait_limit():
    health = {PRO: ModelHealth(PRO, next_free_at=T0 + 60)}
    decision = decide(situation(health=health, wait_until=T0 + 150), CONFIG)
    assert (decision.action, decision.model, decision.at) == (Action.WAIT, PRO, T0 + 60)
    # The latest slot worth it: a success (40 s) or a failure (10 s) and then Flash
    # (40 s) must fit before the limit: defaults, as no latencies are known yet.
    assert decision.book_until == T0 + 150 - 50


def test_it_a_quota_slot_beyond_the_wait_limit_downgrades_at_once():
    health = {PRO: ModelHealth(PRO, next_free_at=T0 + 120)}
    decision = decide(situation(health=health, wait_until=T0 + 150), CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, FLASH)
    assert decision.reason.cause == Reason(Code.QUOTA_PAST_PATIENCE, PRO, seconds=150)


def test_it_blames_the_failures_not_the_quota_when_a_held_retry_passes_the_limit():
    # Pro answered 503; its retry would have to wait for the quota past the wait limit.
    health = {PRO: ModelHealth(PRO, next_free_at=T0 + 200)}
    attempts = [attempt(PRO, "unavailable", at=T0 + 30)]
    decision = decide(situation(attempts, health=health, wait_until=T0 + 150), CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, FLASH)
    assert decision.reason.cause == Reason(
        Code.OUT_OF_PATIENCE, PRO, Outcome.UNAVAILABLE, count=1, seconds=150
    )


def test_it_quality_first_retries_its_primary_while_an_attempt_can_still_pay():
    # Slow 503s (30 s) and Pro's successes taking 30 s, Flash's 15 s.
    health = {
        PRO: ModelHealth(PRO, success_latencies=(30,) * 5, failure_latencies=(30,) * 5),
        FLASH: ModelHealth(FLASH, success_latencies=(15,) * 5),
    }
    attempts = [attempt(PRO, "overloaded", at=T0 + 30), attempt(PRO, "overloaded", at=T0 + 60)]
    s = situation(attempts, health=health, wait_until=T0 + 120, now=T0 + 60)
    decision = decide(s, CONFIG)
    assert (decision.action, decision.model) == (Action.WAIT, PRO)
    assert decision.at <= T0 + 120 - 45  # a failure and Flash still fit after it
    attempts.append(attempt(PRO, "overloaded", at=T0 + 90))
    decision = decide(situation(attempts, health=health, wait_until=T0 + 120), CONFIG)
    assert (decision.action, decision.model, decision.downgraded_from) == (Action.CALL, FLASH, PRO)
    assert decision.reason.cause == Reason(
        Code.OUT_OF_PATIENCE, PRO, Outcome.OVERLOADED, count=3, seconds=120
    )


def test_it_a_success_rate_alone_does_not_make_quality_first_give_up_its_primary():
    # One call in ten succeeds: alive, and worth a few tries within the wait limit.
    health = {PRO: ModelHealth(PRO, success_rate=0.1, window_calls=20)}
    decision = decide(situation([attempt(PRO, "overloaded")], health=health), CONFIG)
    assert (decision.action, decision.model) == (Action.WAIT, PRO)


def test_it_the_deliver_by_time_is_the_wait_limit():
    health = {PRO: ModelHealth(PRO, next_free_at=T0 + 600)}
    decision = decide(situation(health=health, deadline=T0 + 3600), CONFIG)
    assert (decision.action, decision.model, decision.at) == (Action.WAIT, PRO, T0 + 600)


def test_it_stability_first_never_waits_long_even_with_a_deadline():
    health = {FLASH: ModelHealth(FLASH, next_free_at=T0 + 30)}
    decision = decide(
        situation(strategy="stability-first", chain=STABILITY, health=health, deadline=T0 + 3600),
        CONFIG,
    )
    assert (decision.action, decision.model) == (Action.CALL, GPT)


def test_it_a_retry_held_back_by_the_quota_still_says_what_the_last_call_met():
    # A 503, then the limiter has no room until well after the backoff would end.
    health = {PRO: ModelHealth(PRO, next_free_at=T0 + 90)}
    attempts = [attempt(PRO, "overloaded", at=T0 + 30)]
    decision = decide(situation(attempts, health=health, wait_until=T0 + 210), CONFIG)
    assert (decision.action, decision.model, decision.at) == (Action.WAIT, PRO, T0 + 90)
    assert decision.reason == Reason(Code.QUOTA_BUSY, PRO, Outcome.OVERLOADED)
    # Without a failed call before it, the wait is the quota's alone.
    decision = decide(situation(health=health, wait_until=T0 + 210), CONFIG)
    assert decision.reason == Reason(Code.QUOTA_BUSY, PRO)


def test_it_a_failing_middle_model_leaves_the_last_model_its_chance():
    # Pro failed through its wait limit (8 calls), then Flash failed 5 times: the
    # budget (14) has one attempt left, and it is GPT Image's, not Flash's sixth.
    attempts = [attempt(PRO, "unavailable", at=T0 + 20 * i) for i in range(1, 9)]
    attempts += [attempt(FLASH, "server_error", at=T0 + 170 + 5 * i) for i in range(1, 6)]
    decision = decide(situation(attempts), CONFIG)
    assert (decision.action, decision.model) == (Action.CALL, GPT)
    # And with GPT Image out of the chain, Flash keeps its last attempt.
    decision = decide(situation(attempts, chain=(PRO, FLASH)), CONFIG)
    assert decision.model == FLASH


def test_it_a_short_limiter_wait_keeps_the_primary():
    health = {PRO: ModelHealth(PRO, next_free_at=T0 + 3)}
    decision = decide(situation(health=health), CONFIG)
    assert (decision.action, decision.model, decision.at) == (Action.WAIT, PRO, T0 + 3)


def test_it_stability_first_skips_a_struggling_model():
    health = {FLASH: ModelHealth(FLASH, success_rate=0.2, window_calls=10)}
    decision = decide(
        situation(strategy="stability-first", chain=STABILITY, health=health), CONFIG
    )
    assert decision.model == GPT
    assert decision.reason.cause == Reason(Code.STRUGGLING, FLASH, rate=0.2)


def test_it_never_goes_back_up_the_chain():
    health = {PRO: ModelHealth(PRO)}
    decision = decide(situation([attempt(FLASH, "overloaded")], health=health), CONFIG)
    assert decision.model == FLASH


def test_it_the_last_model_is_waited_for_rather_than_failing():
    health = {PRO: ModelHealth(PRO, breaker="open", open_until=T0 + 300)}
    decision = decide(situation(chain=(PRO,), health=health), CONFIG)
    assert (decision.action, decision.at) == (Action.WAIT, T0 + 300)


def test_it_gives_up_when_the_request_is_out_of_time():
    decision = decide(situation([attempt(PRO, "overloaded")], now=T0 + 5000), CONFIG)
    assert decision.action == Action.GIVE_UP
    assert decision.outcome == Outcome.OVERLOADED


def test_it_rejects_a_config_without_attempts():
    with pytest.raises(ValueError, match="attempt_budget"):
        PolicyConfig(attempt_budget=0)


# --- properties: a whole request driven by random outcomes and random health -------------

outcomes = st.sampled_from(list(Outcome))
healths = st.fixed_dictionaries(
    {
        "breaker": st.sampled_from(["closed", "open", "half_open"]),
        "open_for": st.floats(0, 4000),
        "probe": st.booleans(),
        "rate": st.none() | st.floats(0, 1),
        "busy_for": st.none() | st.floats(0, 200),
        "quota_for": st.none() | st.floats(0, 100000),
    }
)


def _health(model, h, now):
    return ModelHealth(
        model,
        breaker=h["breaker"],
        open_until=now + h["open_for"] if h["breaker"] != "closed" else None,
        probe_available=h["probe"],
        success_rate=h["rate"],
        window_calls=10,
        next_free_at=None if h["busy_for"] is None else now + h["busy_for"],
        out_of_quota_until=None if h["quota_for"] is None else now + h["quota_for"],
    )


@settings(max_examples=300, deadline=None)
@given(
    # Every strategy, economy's chain included when it leaves Batch mode.
    strategy=st.sampled_from(STRATEGIES),
    chain=st.sampled_from([QUALITY, STABILITY, (PRO, FLASH), (PRO,)]),
    results=st.lists(
        st.tuples(
            outcomes,
            st.floats(0.1, 200),
            st.none() | st.floats(0, 600),
            st.sampled_from(["", "minute", "day"]),
        ),
        min_size=20,
        max_size=20,
    ),
    health=st.lists(healths, min_size=3, max_size=3),
    deadline=st.none() | st.floats(0, 7200),
    wait_for=st.none() | st.floats(0, 3600),
    latencies=st.lists(st.floats(0.1, 300), max_size=6),
)
def test_it_every_request_terminates_within_its_budget_on_its_chain(
    strategy, chain, results, health, deadline, wait_for, latencies
):
    now = T0
    attempts: list[AttemptRecord] = []
    snapshot = {
        m: replace(
            _health(m, h, now),
            success_latencies=tuple(latencies),
            failure_latencies=tuple(reversed(latencies)),
        )
        for m, h in zip(QUALITY, health, strict=True)
    }
    for _ in range(200):
        s = Situation(
            strategy,
            chain,
            tuple(attempts),
            snapshot,
            now,
            T0,
            None if deadline is None else T0 + deadline,
            "seed",
            None if wait_for is None else T0 + wait_for,
        )
        decision = decide(s, CONFIG)
        if attempts and attempts[-1].outcome in NON_RETRYABLE:
            assert decision.action == Action.GIVE_UP
        if decision.action in (Action.GIVE_UP, Action.DONE):
            assert decision.reason
            if decision.action == Action.GIVE_UP:
                assert decision.outcome is not None
            break
        assert decision.model in chain
        if decision.action == Action.WAIT:
            assert decision.at > now  # time always moves on
            now = decision.at
            continue
        outcome, latency, retry_after, scope = results[len(attempts)]
        now += latency
        attempts.append(AttemptRecord(decision.model, outcome, now, retry_after, scope))
        assert len(attempts) <= CONFIG.attempt_budget
    else:
        pytest.fail("the request did not terminate")


# --- a request's own trouble -------------------------------------------------------------


def own_streak(n, outcome="server_error"):
    return [attempt(PRO, outcome, at=T0 + 30 * (i + 1)) for i in range(n)]


def test_it_moves_on_when_a_model_fails_only_this_request():
    """Three failures in a row while the model serves 97 % of the other calls: the
    request's prompt or references are the trouble; more of the same would not help."""
    health = {PRO: ModelHealth(PRO, success_rate=0.9, window_calls=40)}
    decision = decide(situation(own_streak(3), health=health), CONFIG)
    assert (decision.action, decision.model, decision.downgraded_from) == (
        Action.CALL, FLASH, PRO
    )  # fmt: skip
    cause = decision.reason.cause
    assert (cause.code, cause.model, cause.outcome, cause.count) == (
        Code.ONLY_THIS_REQUEST, PRO, Outcome.SERVER_ERROR, 3
    )  # fmt: skip
    assert cause.rate == pytest.approx(36 / 37)


@pytest.mark.parametrize(
    ("failures", "success_rate", "window_calls"),
    [
        (2, 0.9, 40),  # two in a row happen to anyone
        (3, 0.5, 40),  # the model fails half its calls: this request is no exception
        (3, 0.8, 40),  # an overload starting: the others fail too (0.135^3 > 0.001)
        (3, 0.9, 7),  # too few other calls to judge
        (3, None, 0),  # nothing known
    ],
)
def test_it_keeps_trying_a_model_that_fails_others_too(failures, success_rate, window_calls):
    health = {PRO: ModelHealth(PRO, success_rate=success_rate, window_calls=window_calls)}
    decision = decide(situation(own_streak(failures), health=health), CONFIG)
    assert decision.model == PRO


@pytest.mark.parametrize("outcome", ["overloaded", "unavailable", "network"])
def test_it_never_takes_a_model_without_capacity_for_the_requests_own_trouble(outcome):
    health = {PRO: ModelHealth(PRO, success_rate=0.9, window_calls=40)}
    assert decide(situation(own_streak(4, outcome), health=health), CONFIG).model == PRO


def test_it_does_not_count_429s_as_the_requests_own_trouble():
    health = {PRO: ModelHealth(PRO, success_rate=0.9, window_calls=40)}
    attempts = [*own_streak(2), attempt(PRO, "rate_limited", at=T0 + 90, retry_after_s=1)]
    assert decide(situation(attempts, health=health), CONFIG).model == PRO


def test_it_keeps_the_last_model_in_the_chain_whatever_its_streak():
    health = {PRO: ModelHealth(PRO, success_rate=0.9, window_calls=40)}
    decision = decide(situation(own_streak(3), chain=(PRO,), health=health), CONFIG)
    assert decision.model == PRO
