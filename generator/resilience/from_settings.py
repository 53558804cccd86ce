"""The policy's, breakers' and limiters' settings as frozen dataclasses, every duration
multiplied by settings.TIME_SCALE (one knob compresses all of them for drills and
tests), but never below its real-time floor where it has one (the request budget's:
REQUEST_BUDGET_FLOOR_S). The only module of the chain's logic that reads Django settings."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from generator.resilience.breaker import BreakerConfig
from generator.resilience.limiter import LimiterConfig
from generator.resilience.policy import PolicyConfig, StrategyLimits


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
            request_budget_s=max(
                settings.POLICY_REQUEST_BUDGET_S * k, settings.REQUEST_BUDGET_FLOOR_S
            ),
            expected_call_s=settings.POLICY_EXPECTED_CALL_S * k,
            expected_failure_s=settings.POLICY_EXPECTED_FAILURE_S * k,
            patience_s=settings.POLICY_QUALITY_PATIENCE_S * k,
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
            own_streak_min=settings.POLICY_OWN_STREAK_MIN,
            own_streak_evidence=settings.POLICY_OWN_STREAK_EVIDENCE,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"Retry policy settings: {exc}") from exc


def breaker_config_from_settings() -> BreakerConfig:
    k = _scale()
    try:
        return BreakerConfig(
            window=settings.BREAKER_WINDOW,
            dead_after=settings.BREAKER_DEAD_AFTER,
            probe_s=settings.BREAKER_PROBE_S * k,
            probe_max_s=settings.BREAKER_PROBE_MAX_S * k,
            probe_lease_s=settings.BREAKER_PROBE_LEASE_S * k,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"Circuit breaker settings: {exc}") from exc


def limiter_config_from_settings() -> LimiterConfig:
    k = _scale()
    try:
        return LimiterConfig(
            safety=settings.LIMITER_SAFETY,
            minute_s=60.0 * k,
            day_s=86400.0 * k,
            late_s=settings.LIMITER_LATE_S * k,
            learn_s=3600.0 * k,
            recover_s=300.0 * k,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"Limiter settings: {exc}") from exc
