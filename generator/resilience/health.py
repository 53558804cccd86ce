"""Shared health of the upstream models: one circuit breaker and one quota limiter per
model, in Redis, so that every worker on every machine sees the same state (an outage
is discovered once, not once per worker, and the workers together keep to the quota).

The chain (chain.py) asks `acquire()` before each call, `record()` after it, and gives
the policy a `snapshot()`; the monitoring page reads `overview()` and `transitions()`.
"""

import logging
import secrets
import statistics

from generator.resilience.breaker import Breaker, BreakerConfig, kind_of
from generator.resilience.clock import Clock, SystemClock
from generator.resilience.limiter import Limiter, LimiterConfig, Quotas
from generator.resilience.policy import ModelHealth
from generator.resilience.stores import Store
from generator.resilience.taxonomy import Outcome

log = logging.getLogger("steadyshot.health")

LATENCY_SAMPLES = 50


class Health:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        quotas: dict[str, Quotas],
        breaker: BreakerConfig | None = None,
        limiter: LimiterConfig | None = None,
    ):
        self.store = store
        self.clock = clock
        self.quotas = quotas
        self.breaker = Breaker(store, clock, breaker or BreakerConfig())
        self.limiter = Limiter(store, clock, limiter or LimiterConfig())
        # Probe leases this instance holds: the result of that call closes or reopens
        # the breaker; the results of calls let through before it opened do not.
        self._probes: dict[str, str] = {}

    @classmethod
    def from_settings(cls) -> "Health":
        from django.conf import settings

        from generator.resilience.catalogue import get_catalogue
        from generator.resilience.from_settings import (
            breaker_config_from_settings,
            limiter_config_from_settings,
        )
        from generator.resilience.stores import RedisStore, shared_client

        catalogue = get_catalogue()
        quotas = {m.id: Quotas(rpm=m.rpm, ipm=m.ipm, rpd=m.rpd) for m in catalogue.models.values()}
        return cls(
            RedisStore(shared_client(settings.REDIS_URL)),
            SystemClock(),
            quotas,
            breaker_config_from_settings(),
            limiter_config_from_settings(),
        )

    def _quotas(self, model: str) -> Quotas:
        return self.quotas.get(model, Quotas())

    # --- around a call ---------------------------------------------------------------

    def _cooldown(self, model: str) -> float | None:
        """Until when a per-minute 429 (someone else used the project's quota) holds
        every worker back from `model`."""
        return self.store.get_float(f"cooldown:{model}", self.clock.now())

    def acquire(self, model: str, holder: str = "") -> tuple[bool, float | None]:
        """Reserve one call to `model` now: the breaker must admit it (closed, or the
        single probe of an open breaker) and the limiter must give a slot (`holder`'s
        booking if it is due, else one free now). On refusal, the time at which it
        might be granted.

        Two round trips: the breaker's admission together with what the limiter's slot
        depends on (what the 429s taught, the cool-down), then the slot."""
        now = self.clock.now()
        token = secrets.token_hex(8)
        admission, learned, cooldown = self.store.batch(
            [
                self.breaker.admit_op(model, token, now),
                self.limiter.per_window_op(model, now),
                ("get_float", f"cooldown:{model}", now),
            ]
        )
        admitted, retry_at, probe = self.breaker.admit_from(model, admission, now)
        if not admitted:
            return False, retry_at
        quotas = self._quotas(model)
        n = self.limiter.per_window_from(quotas, learned, now)
        op = self.limiter.slot_op("take", model, quotas, holder, not_before=cooldown, n=n)
        granted, retry_at = self.limiter.take_from(self.store.do(op))
        if not granted:
            self.breaker.release(model, token)
            return False, retry_at
        if probe:
            self._probes[model] = token
        return True, None

    def book(self, model: str, holder: str, not_after: float) -> tuple[bool, float]:
        """Book the earliest free slot of `model` for `holder` unless it is after
        `not_after` (Limiter.book)."""
        return self.limiter.book(
            model, self._quotas(model), holder, not_after, not_before=self._cooldown(model)
        )

    def release(self, holder: str, models) -> None:
        """Give back whatever slot `holder` booked on `models` (a downgrade, a cancel,
        the end of a request), in one round trip (none for no model)."""
        ops = [
            self.limiter.slot_op("release", model, self._quotas(model), holder, n=0)
            for model in models
        ]
        if ops:
            self.store.batch(ops)

    def record(
        self,
        model: str,
        outcome: Outcome,
        latency_ms: int,
        *,
        retry_after_s: float | None = None,
        quota_scope: str = "",
        quota_limit: int | None = None,
    ) -> None:
        """Feed a call's result to the model's breaker and latency statistics (of its
        successes, and of the failures that say it is in trouble); a per-day 429 marks
        the model out of quota until the upstream's next daily reset; a per-minute one
        teaches the limiter (with the per-minute quota the 429 states, `quota_limit`)
        and holds every worker back for the server's retry delay."""
        now = self.clock.now()
        # One round trip: the breaker's count and the latency sample.
        ops = [self.breaker.record_op(model, Outcome(outcome), self._probes.pop(model, ""), now)]
        kind = kind_of(Outcome(outcome))
        if kind != "neutral":
            key = f"latency:{model}" if kind == "success" else f"latency-failed:{model}"
            ops.append(("push_capped", key, str(int(latency_ms)), LATENCY_SAMPLES))
        self.breaker.record_from(model, self.store.batch(ops)[0], now)
        if outcome == Outcome.RATE_LIMITED:
            if quota_scope == "day":
                _, reset = self.limiter.day_window(now)
                self.store.set_until(f"quota-out:{model}", reset, reset, now)
            else:
                # The upstream allows fewer calls than the limiter let through (its
                # quota is smaller than the catalogue's, or other clients of the
                # project use it): keep to fewer from now on.
                learned = self.limiter.learn(model, self._quotas(model), told=quota_limit)
                log.warning("model=%s per-minute 429: now %d calls a window", model, learned)
                if retry_after_s:  # and nobody calls before the server's delay
                    until = now + retry_after_s
                    self.store.set_until(f"cooldown:{model}", until, until, now)

    # --- for the policy ------------------------------------------------------------------

    def snapshot(self, chain, holder: str = "") -> dict[str, ModelHealth]:
        """Each model's shared health, with the slot `holder` booked on it, if any.

        One round trip for the whole chain (Store.batch): each model's breaker, quota
        log, cool-down, per-day mark and latencies. The quota log is read as if the
        upstream's 429s had taught nothing and no cool-down held; a model where either
        is set (after a 429 only) has its log read again with them: a second trip."""
        chain = list(chain)
        now = self.clock.now()
        ops = []
        for model in chain:
            ops += [
                self.breaker.state_op(model, now),
                self.limiter.per_window_op(model, now),
                ("get_float", f"cooldown:{model}", now),
                ("get_float", f"quota-out:{model}", now),
                ("newest", f"latency:{model}", LATENCY_SAMPLES),
                ("newest", f"latency-failed:{model}", LATENCY_SAMPLES),
                self._peek_op(model, holder, now, None),
            ]
        answers = self.store.batch(ops)
        rows = [answers[i * 7 : (i + 1) * 7] for i in range(len(chain))]
        again = [i for i, row in enumerate(rows) if row[1] is not None or row[2] is not None]
        if again:
            peeks = [self._peek_op(chain[i], holder, now, rows[i]) for i in again]
            for i, peek in zip(again, self.store.batch(peeks), strict=True):
                rows[i][6] = peek
        return {
            model: self._model_health(model, now, row)
            for model, row in zip(chain, rows, strict=True)
        }

    def model_health(self, model: str, holder: str = "") -> ModelHealth:
        return self.snapshot([model], holder)[model]

    def _peek_op(self, model: str, holder: str, now: float, row: list | None) -> tuple:
        """The limiter's peek at `model`: with what the 429s taught and the cool-down
        from `row` (the snapshot's reads), or with neither (row None)."""
        quotas = self._quotas(model)
        if row is None:
            return self.limiter.slot_op("peek", model, quotas, holder, n=quotas.per_window)
        n = self.limiter.per_window_from(quotas, row[1], now)
        return self.limiter.slot_op("peek", model, quotas, holder, not_before=row[2], n=n)

    def _model_health(self, model: str, now: float, row: list) -> ModelHealth:
        raw_state, _, _, out_of_quota, success, failure, peek = row
        state = self.breaker.state_from(raw_state, now)
        next_free, booked = self.limiter.peek_from(peek)
        return ModelHealth(
            model=model,
            breaker=state.state,
            open_until=state.open_until,
            probe_available=state.probe_available,
            success_rate=1 - state.failure_rate if state.calls else None,
            window_calls=state.calls,
            next_free_at=next_free,
            booked_at=booked,
            out_of_quota_until=out_of_quota,
            success_latencies=_seconds(success),
            failure_latencies=_seconds(failure),
        )

    def _latencies(self, key: str) -> tuple[float, ...]:
        return _seconds(self.store.newest(key, LATENCY_SAMPLES))

    def p50_ms(self, model: str) -> int | None:
        samples = self._latencies(f"latency:{model}")
        return int(statistics.median(samples) * 1000) if samples else None

    # --- for monitoring ------------------------------------------------------------------

    def overview(self) -> list[dict]:
        """Per model, what the monitoring page shows. The failure rate is over the
        breaker's own window (its last `window_size` counted calls, whenever they were
        made: `window_calls` of them so far), not over any time window; `p50_ms` over
        the last LATENCY_SAMPLES successes. `out_of_quota_until`: after a per-day 429,
        the upstream's next daily reset (epoch seconds), until which the policy skips
        the model; else None."""
        now = self.clock.now()
        rows = []
        for model in self.quotas:
            state = self.breaker.state(model)
            rows.append(
                {
                    "model": model,
                    "breaker": state.state,
                    "open_until": state.open_until,
                    "failure_rate": state.failure_rate,
                    "window_calls": state.calls,
                    "window_size": self.breaker.config.window,
                    "p50_ms": self.p50_ms(model),
                    "quota": self.limiter.usage(model, self._quotas(model)),
                    "out_of_quota_until": self.store.get_float(f"quota-out:{model}", now),
                }
            )
        return rows

    def transitions(self, limit: int = 50) -> list[dict]:
        return self.breaker.transitions(limit)


def _seconds(samples) -> tuple[float, ...]:
    """Latency samples as stored (milliseconds, newest first) in seconds."""
    return tuple(int(ms) / 1000 for ms in samples)


def release_slots(holder: str, models) -> None:
    """Give back the quota slots `holder` (a request's id) booked, from outside a step (a
    cancel). Best effort: a slot not given back passes unused, which costs quota, not
    correctness."""
    try:
        Health.from_settings().release(holder, models)
    except Exception as exc:
        log.warning("request=%s could not give back its booked slots: %s", holder, exc)
