"""A circuit breaker per model, shared by every worker through a Store.

It opens on the failure *rate* over the last `window` calls once at least `min_calls`
were made, not on consecutive failures: at peak Pro fails ~45 % of calls, and a
consecutive-failure breaker would flap open and shut all day although retrying works.
An open breaker lets exactly one probe call through after its open time (a lease with
an expiry, so a probe whose worker died does not block the model forever); the probe's
success closes it, its failure opens it again for longer. Open durations double while
the model keeps failing soon after closing: a provider-wide outage lasts 30-120 min,
and probing it every minute for two hours wastes calls and time.

Pure apart from the store: the benchmark runs it on a virtual clock.
"""

import json
import logging
from dataclasses import dataclass

from generator.resilience.clock import Clock
from generator.resilience.stores import Store
from generator.resilience.taxonomy import Outcome

log = logging.getLogger("steadyshot.breaker")

# What says "the model is in trouble". Not blocked, bad_request or rate_limited: those are
# about the prompt or our quota, and a breaker opened on them would hide a healthy model.
FAILURES = frozenset(
    {
        Outcome.OVERLOADED,
        Outcome.UNAVAILABLE,
        Outcome.SERVER_ERROR,
        Outcome.TIMEOUT,
        Outcome.NETWORK,
    }
)
TRANSITIONS_KEY = "breaker:transitions"


def kind_of(outcome: Outcome) -> str:
    if outcome == Outcome.SUCCESS:
        return "success"
    return "failure" if outcome in FAILURES else "neutral"


@dataclass(frozen=True)
class BreakerConfig:
    window: int = 20  # the last N calls of a model that count
    min_calls: int = 8  # no verdict on fewer calls than this
    failure_rate: float = 0.6  # opens at or above this share of failures in the window
    open_s: float = 60.0  # first open duration
    open_max_s: float = 1800.0  # open durations grow up to this
    multiplier: float = 2.0
    # A breaker that opens again within this long after closing opens for longer.
    cooldown_s: float = 600.0
    probe_lease_s: float = 200.0  # the single half-open probe (longer than any call)
    transitions_kept: int = 200

    def __post_init__(self):
        if not 0 < self.failure_rate <= 1:
            raise ValueError("the failure rate must be in (0, 1]")
        if not 1 <= self.min_calls <= self.window:
            raise ValueError("the minimum number of calls must be between 1 and the window")
        if self.open_s <= 0 or self.open_max_s < self.open_s or self.multiplier < 1:
            raise ValueError("open durations must be positive and grow up to the maximum")
        if self.probe_lease_s <= 0:
            raise ValueError("the probe lease must be positive")

    def open_duration(self, level: int) -> float:
        return min(self.open_max_s, self.open_s * self.multiplier**level)


@dataclass(frozen=True)
class BreakerState:
    state: str  # "closed" | "open" | "half_open"
    open_until: float | None
    failures: int
    calls: int
    probe_available: bool

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


class Breaker:
    def __init__(self, store: Store, clock: Clock, config: BreakerConfig):
        self.store = store
        self.clock = clock
        self.config = config

    def admit(self, model: str, token: str) -> tuple[bool, float | None]:
        """May a call go to `model` now? Past its open time, one caller (holding the
        probe lease `token`) is let through."""
        now = self.clock.now()
        admitted, retry_at, transition = self.store.breaker_admit(model, token, now, self.config)
        if transition:
            self._log(model, transition, now)
        return admitted, retry_at

    def release(self, model: str, token: str) -> None:
        self.store.breaker_release(model, token)

    def record(self, model: str, outcome: Outcome, token: str = "") -> dict | None:
        now = self.clock.now()
        transition = self.store.breaker_record(model, kind_of(outcome), token, now, self.config)
        if transition:
            self._log(model, transition, now)
        return transition

    def state(self, model: str) -> BreakerState:
        now = self.clock.now()
        raw = self.store.breaker_read(model, now)
        open_until = raw["open_until"]
        probe_available = (
            raw["state"] != "closed"
            and open_until is not None
            and now >= open_until
            and raw["probe_until"] is None
        )
        if raw["state"] != "closed" and raw["probe_until"] is not None:
            # Half-open with its probe in flight: nobody else gets in before the lease ends.
            open_until = max(open_until or now, raw["probe_until"])
        return BreakerState(
            state=raw["state"],
            open_until=open_until if raw["state"] != "closed" else None,
            failures=sum(raw["window"]),
            calls=len(raw["window"]),
            probe_available=probe_available,
        )

    def transitions(self, limit: int = 50) -> list[dict]:
        return [json.loads(x) for x in self.store.newest(TRANSITIONS_KEY, limit)]

    def _log(self, model: str, transition: dict, now: float) -> None:
        entry = {"at": now, "model": model, "from": transition["from"], "to": transition["to"]}
        entry["reason"] = transition["reason"]
        self.store.push_capped(TRANSITIONS_KEY, json.dumps(entry), self.config.transitions_kept)
        until = transition.get("open_until")
        log.warning(
            "model=%s breaker %s -> %s: %s%s",
            model,
            transition["from"],
            transition["to"],
            transition["reason"],
            f" (open for {until - now:.0f} s)" if until else "",
        )
