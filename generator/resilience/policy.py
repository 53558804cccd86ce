"""The retry and downgrade policy: given what happened so far, what to do next.

Pure: no Django, no Redis, no httpx, no clock of its own. The same function runs in the
RQ worker (generator/jobs.py) and in the benchmark's simulator on a virtual clock
(benchmarks/chain_vs_naive.py), so what the benchmark measures is what production does.

`decide()` is asked twice per step: before a call (which model, now or later?) and after
it (retry, downgrade, give up?). It must answer the same both times for the same
history, so its jitter comes from a random generator seeded by `Situation.seed` (the
request and its attempt count).

A decision carries a `Reason`: a code and the models and numbers it needs, no words.
People read them in words made where they are shown (generator/reasons.py), with the
models' display names.

Why the rules are what they are (docs/resilience.md has the long version):
- blocked, bad_request and auth are the user's or the operator's problem: another call
  cannot fix them. blocked is not downgraded either: a weaker model would be asked to
  draw what the safety filters refused.
- not_found means the model is gone: the next model, at once.
- overloaded and friends are transient: retried with full jitter (so that a crowd of
  requests does not come back in lock-step) within a per-model and a per-request
  attempt budget, then downgraded.
- rate_limited honours the server's retry delay; a per-day quota will not come back
  today, so the next model at once.
- Quality-first has a wait limit for its first model ("patience": the request's deliver-
  by time, or a default): within it the policy keeps trying that model while it is
  alive (its breaker is not open), a success would most likely land in time (the median
  of its recent successes' latencies fits) and, should the attempt fail, the next model
  could still deliver in time (the median failure latency plus the next model's median
  success latency fit). How often the model fails does not stop it: a model that
  succeeds one call in ten still delivers a share of the requests that try it a few
  times, and the breaker says when it is dead. A wait for a quota slot is booked.
- For the other models, an open breaker or a limiter with no headroom is a wait the
  request did not cause: quality-first waits only if the wait is short or its deadline
  allows it, stability-first never waits long.
- A request whose own calls keep failing on a model that serves the others is the
  problem, not the model (its prompt, its references, its size: a prompt that always
  gets text back or an internal error, a reference the model chokes on): after
  `own_streak_min` such failures in a row (OWN_TROUBLE: never 503s, which say the model
  has no capacity) that the others' recent success rate p makes unlikely ((1 - p)^k
  below `own_streak_evidence`), it moves down the chain instead of spending its
  attempts and the model's quota on more of the same.
"""

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from generator.resilience.strategies import StrategyName
from generator.resilience.taxonomy import Outcome

QUALITY_FIRST = StrategyName.QUALITY_FIRST
STABILITY_FIRST = StrategyName.STABILITY_FIRST

# Another call cannot change these: give up at once.
NON_RETRYABLE = frozenset({Outcome.BLOCKED, Outcome.BAD_REQUEST, Outcome.AUTH})
# Transient trouble on the model's side: retry with backoff, then downgrade.
RETRYABLE = frozenset(
    {
        Outcome.OVERLOADED,
        Outcome.UNAVAILABLE,
        Outcome.SERVER_ERROR,
        Outcome.TIMEOUT,
        Outcome.NETWORK,
        Outcome.NO_IMAGE,
        Outcome.MALFORMED,
    }
)
# Failures a request's own content can cause (a prompt that always gets text back or an
# internal error, a reference the model chokes on, a size that times out). A 503 says
# the model has no capacity, a network error that it cannot be reached: never the
# request's doing.
OWN_TROUBLE = frozenset(
    {Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.NO_IMAGE, Outcome.MALFORMED}
)


class Code(StrEnum):
    """Why the policy decided what it did; `Reason` carries the details."""

    DELIVERED = "delivered"  # model
    CALLING = "calling"  # model
    BACKOFF = "backoff"  # model failed with outcome; retried after a jittered wait
    RATE_LIMITED = "rate_limited"  # model; retried after the server's delay (seconds)
    BREAKER_OPEN = "breaker_open"  # model's circuit breaker is open: it is down
    OUT_OF_PATIENCE = "out_of_patience"  # model failed (outcome, count attempts) through
    # the request's wait limit (seconds) for it: another attempt cannot deliver in time
    QUOTA_PAST_PATIENCE = "quota_past_patience"  # model's next free quota slot is later
    # than the request's wait limit (seconds) allows
    QUOTA_BUSY = "quota_busy"  # model's upstream quota has no headroom (for the retry
    # after outcome, when the request's last call to it failed)
    ALL_BUSY = "all_busy"  # every model's quota refused the call just now
    DAILY_QUOTA = "daily_quota"  # model's daily quota is used up
    NOT_FOUND = "not_found"  # model is not found upstream
    STRUGGLING = "struggling"  # model's recent success rate is below the floor (rate)
    ONLY_THIS_REQUEST = "only_this_request"  # model failed count times in a row (the
    # last with outcome) for this request while it served others (rate)
    FAILED_TIMES = "failed_times"  # model failed count times (the last with outcome)
    NOT_RETRIED = "not_retried"  # model answered outcome, which another call cannot fix
    ATTEMPTS_USED = "attempts_used"  # count attempts made, the last: model, outcome
    DEADLINE_PASSED = "deadline_passed"
    OUT_OF_TIME = "out_of_time"  # the request's time budget is spent
    ALL_TRIED = "all_tried"  # every model in the chain was tried (count attempts)
    NONE_LEFT = "none_left"  # cause, and no model is left in the chain
    NO_MODEL = "no_model"  # the chain is empty
    NONE_IN_TIME = "none_in_time"  # cause; no model can be called before the time is up
    DOWNGRADE = "downgrade"  # cause; downgrading to model


@dataclass(frozen=True)
class Reason:
    code: Code
    model: str = ""
    outcome: Outcome | None = None
    count: int = 0
    seconds: float = 0.0
    rate: float | None = None
    cause: "Reason | None" = None  # for DOWNGRADE, NONE_LEFT, NONE_IN_TIME


class Action(StrEnum):
    CALL = "call"  # call `model` now
    WAIT = "wait"  # run the next step at `at` on `model` (a retry or a downgrade)
    GIVE_UP = "give_up"  # fail the request with `outcome` and `reason`
    DONE = "done"  # the last attempt succeeded: nothing left to decide


@dataclass(frozen=True)
class AttemptRecord:
    model: str
    outcome: Outcome
    at: float  # when the attempt ended (epoch seconds)
    retry_after_s: float | None = None  # the server's retry delay, for rate_limited
    quota_scope: str = ""  # "minute", "day" or ""


@dataclass(frozen=True)
class ModelHealth:
    """What all workers know about a model right now (built by generator.resilience.health)."""

    model: str
    breaker: str = "closed"  # "closed" | "open" | "half_open"
    # When an open breaker lets a probe through (None: closed).
    open_until: float | None = None
    # Open breaker past open_until whose single probe lease is free: a call may probe.
    probe_available: bool = False
    success_rate: float | None = None  # over the breaker's window; None: too few calls
    window_calls: int = 0
    # The limiter has no headroom before this time (None: a call may go now).
    next_free_at: float | None = None
    # The slot the asking request booked on this model (None: none): its own, whatever
    # next_free_at says.
    booked_at: float | None = None
    # A per-day quota was exhausted; no calls before this time (the upstream's reset).
    out_of_quota_until: float | None = None
    # Recent latencies in seconds of the model's successes and of its failures.
    success_latencies: tuple[float, ...] = ()
    failure_latencies: tuple[float, ...] = ()

    def available_at(self, now: float) -> float:
        """The earliest time a call to this model could be admitted."""
        at = now
        if self.breaker != "closed" and not self.probe_available:
            at = max(at, self.open_until or now)
        if self.booked_at is not None:
            at = max(at, self.booked_at)
        elif self.next_free_at is not None:
            at = max(at, self.next_free_at)
        if self.out_of_quota_until is not None:
            at = max(at, self.out_of_quota_until)
        return at


@dataclass(frozen=True)
class Situation:
    strategy: str
    chain: tuple[str, ...]
    attempts: tuple[AttemptRecord, ...]
    health: Mapping[str, ModelHealth]
    now: float
    created: float
    deadline: float | None
    seed: str = ""
    # Quality-first: until when the first model may be waited for (the deadline when
    # given, else created + the default patience); None: the deadline, or else
    # created + config.patience_s.
    wait_until: float | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    model: str = ""
    at: float = 0.0
    reason: Reason | None = None
    downgraded_from: str = ""
    # A WAIT for the model's quota: book its earliest free slot, if it is no later than
    # this (the latest start the strategy accepts); a later one means ask again.
    book_until: float | None = None
    outcome: Outcome | None = None


@dataclass(frozen=True)
class StrategyLimits:
    attempts_per_model: int  # for every model but the last usable one in the chain
    max_wait_s: float  # the longest wait on a model before moving down the chain
    max_rate_limit_wait_s: float  # the longest server retry delay honoured on a model
    min_success_rate: float  # below this (over enough calls) skip the model; 0: never


@dataclass(frozen=True)
class PolicyConfig:
    """Every duration in seconds, already multiplied by TIME_SCALE
    (generator.resilience.from_settings builds it from settings)."""

    attempt_budget: int = 14  # calls per request, all models together
    backoff_base_s: float = 2.0  # full jitter: uniform(0, min(cap, base * 2**n))
    backoff_cap_s: float = 30.0
    rate_limited_default_s: float = 30.0  # a 429 without a retry delay
    min_wait_s: float = 0.5  # every WAIT is at least this far ahead: the loop progresses
    request_budget_s: float = 1200.0  # without a deadline, give up this long after submit
    expected_call_s: float = 40.0  # a call's duration, to judge whether a deadline allows a wait
    # A failed call's duration, until the model's own failures say otherwise.
    expected_failure_s: float = 10.0
    # Quality-first waits this long for its first model unless the request says otherwise.
    patience_s: float = 210.0
    quality: StrategyLimits = StrategyLimits(
        attempts_per_model=10, max_wait_s=15.0, max_rate_limit_wait_s=60.0, min_success_rate=0.0
    )
    stability: StrategyLimits = StrategyLimits(
        attempts_per_model=2, max_wait_s=5.0, max_rate_limit_wait_s=5.0, min_success_rate=0.5
    )
    min_calls_for_rate: int = 5  # success_rate is trusted only above this many calls
    # A request's own failures in a row on a model, and how unlikely they must be given
    # the others' success rate, before the request takes them for its own problem.
    own_streak_min: int = 3
    own_streak_evidence: float = 0.001

    def limits(self, strategy: str) -> StrategyLimits:
        return self.stability if strategy == STABILITY_FIRST else self.quality

    def __post_init__(self):
        if self.attempt_budget < 1:
            raise ValueError("attempt_budget must be at least 1")
        for limits in (self.quality, self.stability):
            if limits.attempts_per_model < 1:
                raise ValueError("attempts_per_model must be at least 1")
        if min(self.backoff_base_s, self.backoff_cap_s, self.min_wait_s) < 0:
            raise ValueError("durations must not be negative")
        if self.own_streak_min < 1 or not 0 < self.own_streak_evidence < 1:
            raise ValueError(
                "own_streak_min must be at least 1 and own_streak_evidence between 0 and 1"
            )


def backoff_s(config: PolicyConfig, failures: int, rng: random.Random) -> float:
    """Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): a uniform
    wait below an exponentially growing cap spreads a crowd of retries evenly."""
    ceiling = min(config.backoff_cap_s, config.backoff_base_s * 2 ** max(failures - 1, 0))
    return rng.uniform(0, ceiling)


def median(samples: tuple[float, ...], default: float) -> float:
    """The median of a model's recent latencies; `default` until there are a few."""
    if len(samples) < 3:
        return default
    ordered = sorted(samples)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def decide(situation: Situation, config: PolicyConfig) -> Decision:
    """The next step of a request."""
    return _Planner(situation, config).decide()


class _Planner:
    def __init__(self, s: Situation, config: PolicyConfig):
        self.s = s
        self.config = config
        self.limits = config.limits(s.strategy)
        self.now = s.now
        self.last = s.attempts[-1] if s.attempts else None
        self.counts: dict[str, int] = {}
        for a in s.attempts:
            self.counts[a.model] = self.counts.get(a.model, 0) + 1
        # A patient request may wait until its deadline; others until their time budget.
        self.give_up_at = (
            s.deadline if s.deadline is not None else s.created + config.request_budget_s
        )
        self.wait_until = s.wait_until
        if self.wait_until is None:
            self.wait_until = s.deadline or s.created + config.patience_s

    def decide(self) -> Decision:
        s, last = self.s, self.last
        if last is not None and last.outcome == Outcome.SUCCESS:
            return Decision(
                Action.DONE, model=last.model, reason=Reason(Code.DELIVERED, last.model)
            )
        if last is not None and last.outcome in NON_RETRYABLE:
            why = Reason(Code.NOT_RETRIED, last.model, last.outcome)
            return self._give_up(last.outcome, why)
        if len(s.attempts) >= self.config.attempt_budget:
            why = Reason(
                Code.ATTEMPTS_USED,
                last.model if last else "",
                last.outcome if last else None,
                count=len(s.attempts),
            )
            return self._give_up(last.outcome if last else Outcome.UNAVAILABLE, why)
        if self.now >= self.give_up_at:
            code = Code.DEADLINE_PASSED if s.deadline is not None else Code.OUT_OF_TIME
            return self._give_up(last.outcome if last else Outcome.TIMEOUT, Reason(code))

        candidates = self._candidates()
        if not candidates:
            return self._give_up(*self._why_none_left())
        fallback: tuple[float, str, Reason] | None = None  # (ready, model, why not now)
        for i, model in enumerate(candidates):
            is_last = i == len(candidates) - 1
            ready, why, patient, book_until = self._ready_at(model, is_last)
            if ready <= self.now:
                return self._step(Action.CALL, model, self.now, why)
            if patient or is_last:
                at = max(ready, self.now + self.config.min_wait_s)
                if at <= self.give_up_at:
                    return self._step(Action.WAIT, model, at, why, book_until)
            if fallback is None or ready < fallback[0]:
                fallback = (ready, model, why)
        # No model is usable before the request's time is up.
        ready, model, why = fallback
        outcome = last.outcome if last else Outcome.UNAVAILABLE
        return self._give_up(outcome, Reason(Code.NONE_IN_TIME, cause=why))

    # --- which models are still in play --------------------------------------------

    def _position(self) -> int:
        """Never go back up the chain: a request moves down from its last model."""
        if self.last is not None and self.last.model in self.s.chain:
            return self.s.chain.index(self.last.model)
        return 0

    def _out(self, model: str) -> Reason | None:
        """Why `model` is out of play for this request (None if it is not)."""
        for a in self.s.attempts:
            if a.model != model:
                continue
            if a.outcome == Outcome.NOT_FOUND:
                return Reason(Code.NOT_FOUND, model)
            if a.outcome == Outcome.RATE_LIMITED and a.quota_scope == "day":
                return Reason(Code.DAILY_QUOTA, model)
        health = self.s.health.get(model)
        until = health.out_of_quota_until if health is not None else None
        if until is not None and until > self.give_up_at:
            return Reason(Code.DAILY_QUOTA, model)
        return None

    def _candidates(self) -> list[str]:
        """The models this request may still call, in chain order, each within its
        attempt allowance. The last one may use whatever is left of the budget; one
        before it keeps an attempt of the budget for each usable model after it, so a
        failing middle model cannot take the last model's only chance."""
        chain = self.s.chain[self._position() :]
        usable = [m for m in chain if not self._out(m)]
        remaining = self.config.attempt_budget - len(self.s.attempts)
        result = []
        for i, model in enumerate(usable):
            used = self.counts.get(model, 0)
            after = len(usable) - 1 - i
            allowed = used + remaining - after
            if after:
                allowed = min(allowed, self.limits.attempts_per_model)
            if used < allowed:
                result.append(model)
        return result

    def _why_none_left(self) -> tuple[Outcome, Reason]:
        last = self.last
        if last is None:
            outs = [o for o in map(self._out, self.s.chain[self._position() :]) if o]
            if not outs:
                return Outcome.UNAVAILABLE, Reason(Code.NO_MODEL)
            quota = any(o.code == Code.DAILY_QUOTA for o in outs)
            return (
                Outcome.RATE_LIMITED if quota else Outcome.UNAVAILABLE,
                Reason(Code.NONE_LEFT, cause=outs[0]),
            )
        if last.outcome == Outcome.NOT_FOUND or last.quota_scope == "day":
            return last.outcome, Reason(Code.NONE_LEFT, cause=self._out(last.model))
        return last.outcome, Reason(Code.ALL_TRIED, count=len(self.s.attempts))

    # --- when a model can be called ----------------------------------------------------

    def _ready_at(self, model: str, is_last: bool) -> tuple[float, Reason, bool, float | None]:
        """(earliest call time, why, whether this strategy waits that long for it, and
        for a wait on the model's quota the latest slot worth booking)."""
        ready, why = self._retry_at(model)
        health = self.s.health.get(model)
        if health is not None:
            if not is_last and self._struggling(health):
                rate = health.success_rate or 0.0
                return float("inf"), Reason(Code.STRUGGLING, model, rate=rate), False, None
            alone = None if is_last else self._only_this_request(model, health)
            if alone is not None:
                return float("inf"), alone, False, None
            available = health.available_at(self.now)
            # Compared with now too: a backoff that has already run out is no reason to
            # blame the breaker or the quota for the call not going at once.
            if available > max(ready, self.now):
                # A retry held back by the quota still says what the last call met.
                failed = why.outcome if why.code == Code.BACKOFF else None
                ready, why = available, self._blocked_by(health, available, failed)
        if self._patient_for(model, is_last):
            return self._within_patience(model, ready, why)
        return ready, why, self._waits_for(ready, why), self._book_until(why, is_last)

    def _retry_at(self, model: str) -> tuple[float, Reason]:
        """When the request's own history lets it call `model` again, and why."""
        last = self.last
        if last is None or last.model != model:
            return self.now, Reason(Code.CALLING, model)
        if last.outcome == Outcome.RATE_LIMITED:
            delay = last.retry_after_s
            if delay is None:
                delay = self.config.rate_limited_default_s
            return last.at + delay, Reason(Code.RATE_LIMITED, model, seconds=delay)
        if last.outcome in RETRYABLE:
            failures = self._trailing_failures(model)
            seeded = random.Random(f"{self.s.seed}:{model}:{len(self.s.attempts)}")
            ready = last.at + backoff_s(self.config, failures, seeded)
            return ready, Reason(Code.BACKOFF, model, last.outcome)
        return self.now, Reason(Code.CALLING, model)

    @staticmethod
    def _blocked_by(health: ModelHealth, ready: float, failed: Outcome | None) -> Reason:
        model = health.model
        if health.breaker != "closed" and not health.probe_available:
            return Reason(Code.BREAKER_OPEN, model)
        if health.out_of_quota_until is not None and health.out_of_quota_until >= ready:
            return Reason(Code.DAILY_QUOTA, model)
        return Reason(Code.QUOTA_BUSY, model, failed)

    def _waits_for(self, ready: float, why: Reason) -> bool:
        """Whether the strategy waits until `ready` for a model it has no patience for."""
        limits = self.limits
        if why.code == Code.RATE_LIMITED:
            return why.seconds <= limits.max_rate_limit_wait_s or self._deadline_allows(ready)
        if why.code in (Code.CALLING, Code.BACKOFF):
            return True
        return ready - self.now <= limits.max_wait_s or self._deadline_allows(ready)

    def _book_until(self, why: Reason, is_last: bool) -> float | None:
        if why.code != Code.QUOTA_BUSY:
            return None
        if is_last:
            return self.give_up_at
        latest = self.now + self.limits.max_wait_s
        if self._deadline_allows(self.now):
            latest = max(latest, self.s.deadline - self.config.expected_call_s)
        return latest

    # --- the wait limit for the first model of quality-first ----------------------------

    def _patient_for(self, model: str, is_last: bool) -> bool:
        """Quality-first waits for its first model within the wait limit; the last
        usable model is waited for in any case."""
        return self.s.strategy != STABILITY_FIRST and model == self.s.chain[0] and not is_last

    def _within_patience(
        self, model: str, ready: float, why: Reason
    ) -> tuple[float, Reason, bool, float | None]:
        if why.code == Code.BREAKER_OPEN:
            return ready, why, False, None  # dead: no use waiting for the next probe
        latest = self._latest_start(model)
        if ready <= latest:
            return ready, why, True, latest if why.code == Code.QUOTA_BUSY else None
        limit = self.wait_until - self.s.created
        if why.code == Code.QUOTA_BUSY and why.outcome is None:
            return ready, Reason(Code.QUOTA_PAST_PATIENCE, model, seconds=limit), False, None
        # Failed calls (a retry the quota held back included) are why the limit ran out.
        tried = [a for a in self.s.attempts if a.model == model]
        outcome = tried[-1].outcome if tried else None
        why = Reason(Code.OUT_OF_PATIENCE, model, outcome, count=len(tried), seconds=limit)
        return ready, why, False, None

    def _latest_start(self, model: str) -> float:
        """The latest time a call to `model` may start and still pay within the wait
        limit: a success would most likely land in time (its median latency fits) and,
        should it fail, the next model could still deliver in time."""
        health = self.s.health.get(model) or ModelHealth(model)
        success = median(health.success_latencies, self.config.expected_call_s)
        failure = median(health.failure_latencies, self.config.expected_failure_s)
        position = self.s.chain.index(model)
        after = next((m for m in self.s.chain[position + 1 :] if not self._out(m)), None)
        fallback = 0.0
        if after is not None:
            nxt = self.s.health.get(after) or ModelHealth(after)
            fallback = median(nxt.success_latencies, self.config.expected_call_s)
        return self.wait_until - max(success, failure + fallback)

    def _struggling(self, health: ModelHealth) -> bool:
        floor = self.limits.min_success_rate
        return (
            floor > 0
            and health.success_rate is not None
            and health.window_calls >= self.config.min_calls_for_rate
            and health.success_rate < floor
        )

    def _only_this_request(self, model: str, health: ModelHealth) -> Reason | None:
        """Why `model` is out of play for this request when its own failures in a row
        on it are too many to be the model's (None when they are not)."""
        mine, streak = 0, []  # its failures in a row; those it may have caused
        for a in reversed(self.s.attempts):
            if a.model != model or a.outcome not in RETRYABLE:
                break
            mine += 1
            if a.outcome in OWN_TROUBLE:
                streak.append(a)
        k = len(streak)
        if k < self.config.own_streak_min or health.success_rate is None:
            return None
        # The window holds this request's failures too: the others' calls are the rest.
        others = health.window_calls - mine
        if others < self.config.min_calls_for_rate:
            return None
        rate = min(1.0, health.success_rate * health.window_calls / others)
        if (1.0 - rate) ** k >= self.config.own_streak_evidence:
            return None
        return Reason(Code.ONLY_THIS_REQUEST, model, streak[0].outcome, count=k, rate=rate)

    def _deadline_allows(self, ready: float) -> bool:
        """A patient request (quality-first with a deadline) waits for its model when the
        call would still end before the deadline; stability-first never waits long."""
        if self.s.deadline is None or self.s.strategy == STABILITY_FIRST:
            return False
        return ready + self.config.expected_call_s <= self.s.deadline

    def _trailing_failures(self, model: str) -> int:
        n = 0
        for a in reversed(self.s.attempts):
            if a.model != model or a.outcome == Outcome.SUCCESS:
                break
            n += 1
        return n

    # --- decisions -----------------------------------------------------------------------

    def _step(
        self, action: Action, model: str, at: float, why: Reason, book_until: float | None = None
    ) -> Decision:
        previous = self.last.model if self.last else self.s.chain[0]
        downgraded_from = previous if model != previous else ""
        if downgraded_from:
            why = Reason(Code.DOWNGRADE, model, cause=self._left_because(previous))
        return Decision(
            action,
            model=model,
            at=at,
            reason=why,
            downgraded_from=downgraded_from,
            book_until=book_until,
        )

    def _left_because(self, model: str) -> Reason:
        out = self._out(model)
        if out:
            return out
        used = self.counts.get(model, 0)
        if used >= self.limits.attempts_per_model:
            last = self.last
            outcome = last.outcome if last and last.model == model else None
            return Reason(Code.FAILED_TIMES, model, outcome, count=used)
        return self._ready_at(model, is_last=False)[1]

    def _give_up(self, outcome: Outcome, reason: Reason) -> Decision:
        return Decision(Action.GIVE_UP, reason=reason, outcome=outcome)
