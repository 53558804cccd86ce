"""The upstream quota limiter, against real Redis (many threads) and in memory."""

from datetime import UTC, datetime

import pytest

from generator.resilience.limiter import Limiter, LimiterConfig, Quotas

PRO = "gemini-3-pro-image-preview"


def test_it_admits_a_burst_up_to_the_safe_share_of_the_quota(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=0.85))
    quotas = Quotas(rpm=20)
    granted = [limiter.reserve(PRO, quotas)[0] for _ in range(20)]
    assert granted.count(True) == 17  # floor(20 * 0.85)
    assert granted[:17] == [True] * 17
    ok, retry_at = limiter.reserve(PRO, quotas)
    assert not ok
    assert retry_at == pytest.approx(clock.now() + 60 / 17)
    assert limiter.next_free_at(PRO, quotas) == pytest.approx(retry_at)


def test_it_refills_at_the_quotas_rate(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    quotas = Quotas(rpm=6)
    assert all(limiter.reserve(PRO, quotas)[0] for _ in range(6))
    assert not limiter.reserve(PRO, quotas)[0]
    clock.advance(10)
    assert limiter.reserve(PRO, quotas)[0]
    assert not limiter.reserve(PRO, quotas)[0]


def test_a_call_refused_by_one_quota_takes_nothing_from_the_others(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    assert limiter.reserve(PRO, Quotas(ipm=1))[0]
    assert not limiter.reserve(PRO, Quotas(rpm=5, ipm=1))[0]
    assert limiter.usage(PRO, Quotas(rpm=5, ipm=1)) == {
        "rpm": {"used": 0, "limit": 5},
        "ipm": {"used": 1, "limit": 1},
    }


def test_the_daily_quota_resets_at_pacific_midnight(store, clock):
    # 2026-03-02 07:59 UTC is 23:59 the day before in Los Angeles (PST, UTC-8).
    clock.t = datetime(2026, 3, 2, 7, 59, tzinfo=UTC).timestamp()
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    quotas = Quotas(rpd=2)
    assert limiter.reserve(PRO, quotas)[0] and limiter.reserve(PRO, quotas)[0]
    ok, retry_at = limiter.reserve(PRO, quotas)
    assert not ok
    assert retry_at == datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()
    clock.advance(61)
    assert limiter.reserve(PRO, quotas)[0]


def test_scaled_days_are_short(clock):
    limiter = Limiter(None, clock, LimiterConfig(day_s=864.0))
    name, reset = limiter.day_window(clock.now())
    assert 0 < reset - clock.now() <= 864
    assert limiter.day_window(reset)[0] != name


def test_models_without_quotas_are_not_limited(store, clock):
    limiter = Limiter(store, clock, LimiterConfig())
    assert all(limiter.reserve("unlimited", Quotas())[0] for _ in range(100))


def test_it_rejects_a_safety_factor_above_one():
    with pytest.raises(ValueError, match="safety"):
        LimiterConfig(safety=1.5)
