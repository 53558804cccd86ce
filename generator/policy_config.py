"""The policy's, breakers' and limiters' settings as frozen dataclasses, every duration
multiplied by settings.TIME_SCALE (one knob compresses all of them for drills and
tests). The only module of the chain's logic that reads Django settings."""

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from generator.policy import PolicyConfig, StrategyLimits


@dataclass(frozen=True)
class BreakerConfig:
    window: int = 20  # the last N calls of a model that count
    min_calls: int = 8  # no verdict on fewer calls than this
    failure_rate: float = 0.6  # opens at or above this share of failures in the window
    open_s: float = 60.0  # first open duration
    open_max_s: float = 1800.0  # open durations double up to this
    multiplier: float = 2.0
    # A breaker that opens again within this long after closing opens for longer.
    cooldown_s: float = 600.0
    probe_lease_s: float = 200.0  # the single half-open probe (longer than a call)
    latency_samples: int = 50
    transitions_kept: int = 200

    def __post_init__(self):
        if not 0 < self.failure_rate <= 1:
            raise ValueError("BREAKER_FAILURE_RATE must be in (0, 1]")
        if not 1 <= self.min_calls <= self.window:
            raise ValueError("BREAKER_MIN_CALLS must be between 1 and BREAKER_WINDOW")
        if self.open_s <= 0 or self.open_max_s < self.open_s or self.multiplier < 1:
            raise ValueError("BREAKER_OPEN_S must be positive, at most BREAKER_OPEN_MAX_S")
        if self.probe_lease_s <= 0:
            raise ValueError("BREAKER_PROBE_LEASE_S must be positive")

    def open_duration(self, level: int) -> float:
        return min(self.open_max_s, self.open_s * self.multiplier**level)


@dataclass(frozen=True)
class LimiterConfig:
    # The share of each catalogue quota the workers together may use: the rest absorbs
    # clock skew, calls in flight and other clients of the same Google Cloud project.
    safety: float = 0.85
    minute_s: float = 60.0  # the length of a "per minute" quota
    day_s: float = 86400.0  # the length of a "per day" quota (scaled days in drills)
    day_zone: str = "America/Los_Angeles"  # Google resets daily quotas at Pacific midnight

    def __post_init__(self):
        if not 0 < self.safety <= 1:
            raise ValueError("LIMITER_SAFETY must be in (0, 1]")
        if self.minute_s <= 0 or self.day_s <= 0:
            raise ValueError("quota periods must be positive")


def _scale() -> float:
    scale = settings.TIME_SCALE
    if scale <= 0:
        raise ImproperlyConfigured(f"TIME_SCALE must be positive; got {scale}")
    return scale


def policy_config_from_settings() -> PolicyConfig:
    k = _scale()
    try:
        return PolicyConfig(
            attempt_budget=settings.POLICY_ATTEMPT_BUDGET,
            backoff_base_s=settings.POLICY_BACKOFF_BASE_S * k,
            backoff_cap_s=settings.POLICY_BACKOFF_CAP_S * k,
            rate_limited_default_s=settings.POLICY_RATE_LIMITED_DEFAULT_S * k,
            min_wait_s=settings.POLICY_MIN_WAIT_S * k,
            request_budget_s=settings.POLICY_REQUEST_BUDGET_S * k,
            expected_call_s=settings.POLICY_EXPECTED_CALL_S * k,
            quality=StrategyLimits(
                attempts_per_model=settings.POLICY_QUALITY_ATTEMPTS_PER_MODEL,
                max_wait_s=settings.POLICY_QUALITY_MAX_WAIT_S * k,
                max_rate_limit_wait_s=settings.POLICY_QUALITY_MAX_RATE_LIMIT_WAIT_S * k,
                min_success_rate=0.0,
            ),
            stability=StrategyLimits(
                attempts_per_model=settings.POLICY_STABILITY_ATTEMPTS_PER_MODEL,
                max_wait_s=settings.POLICY_STABILITY_MAX_WAIT_S * k,
                max_rate_limit_wait_s=settings.POLICY_STABILITY_MAX_WAIT_S * k,
                min_success_rate=settings.POLICY_STABILITY_MIN_SUCCESS_RATE,
            ),
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"Retry policy settings: {exc}") from exc


def breaker_config_from_settings() -> BreakerConfig:
    k = _scale()
    try:
        return BreakerConfig(
            window=settings.BREAKER_WINDOW,
            min_calls=settings.BREAKER_MIN_CALLS,
            failure_rate=settings.BREAKER_FAILURE_RATE,
            open_s=settings.BREAKER_OPEN_S * k,
            open_max_s=settings.BREAKER_OPEN_MAX_S * k,
            cooldown_s=settings.BREAKER_COOLDOWN_S * k,
            probe_lease_s=settings.BREAKER_PROBE_LEASE_S * k,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"Circuit breaker settings: {exc}") from exc


def limiter_config_from_settings() -> LimiterConfig:
    k = _scale()
    try:
        return LimiterConfig(safety=settings.LIMITER_SAFETY, minute_s=60.0 * k, day_s=86400.0 * k)
    except ValueError as exc:
        raise ImproperlyConfigured(f"Limiter settings: {exc}") from exc
