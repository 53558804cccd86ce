"""The upstream quota limiter, against real Redis (many threads) and in memory."""

from datetime import UTC, datetime

import pytest

from generator.resilience.limiter import Limiter, LimiterConfig, Quotas

PRO = "gemini-3-pro-image-preview"


def test_it_admits_a_burst_up_to_the_safe_share_of_the_quota(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=0.85))
    quotas = Quotas(rpm=20)
    granted = [limiter.take(PRO, quotas)[0] for _ in range(20)]
    assert granted.count(True) == 17  # floor(20 * 0.85)
    assert granted[:17] == [True] * 17
    ok, retry_at = limiter.take(PRO, quotas)
    assert not ok
    assert retry_at == pytest.approx(clock.now() + 60 / 17)
    assert limiter.next_free_at(PRO, quotas) == pytest.approx(retry_at)


def test_it_keeps_the_fraction_of_a_small_quota(store, clock):
    # 85 % of 2 a minute is 1.7 a minute (one call every 35 s), not 1.
    limiter = Limiter(store, clock, LimiterConfig(safety=0.85))
    quotas = Quotas(rpm=2)
    assert limiter.take(PRO, quotas)[0]  # the burst: one whole call
    t = clock.now()
    slots = [limiter.book(PRO, quotas, f"r{i}", not_after=t + 3600)[1] for i in range(17)]
    assert slots == pytest.approx([t + (i + 1) * 60 / 1.7 for i in range(17)], abs=1e-3)
    assert slots[-1] == pytest.approx(t + 600, abs=1e-3)  # 17 slots in 10 minutes


def test_it_refills_at_the_quotas_rate(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    quotas = Quotas(rpm=6)
    assert all(limiter.take(PRO, quotas)[0] for _ in range(6))
    assert not limiter.take(PRO, quotas)[0]
    clock.advance(10)
    assert limiter.take(PRO, quotas)[0]
    assert not limiter.take(PRO, quotas)[0]


def test_it_a_call_refused_by_one_quota_takes_nothing_from_the_others(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    assert limiter.take(PRO, Quotas(ipm=1))[0]
    assert not limiter.take(PRO, Quotas(rpm=5, ipm=1))[0]
    assert limiter.usage(PRO, Quotas(rpm=5, ipm=1)) == {
        "rpm": {"used": 0, "limit": 5},
        "ipm": {"used": 1, "limit": 1},
    }


def test_it_the_daily_quota_resets_at_pacific_midnight(store, clock):
    # 2026-03-02 07:59 UTC is 23:59 the day before in Los Angeles (PST, UTC-8).
    clock.t = datetime(2026, 3, 2, 7, 59, tzinfo=UTC).timestamp()
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    quotas = Quotas(rpd=2)
    assert limiter.take(PRO, quotas)[0] and limiter.take(PRO, quotas)[0]
    ok, retry_at = limiter.take(PRO, quotas)
    assert not ok
    assert retry_at == datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()
    clock.advance(61)
    assert limiter.take(PRO, quotas)[0]


def test_it_scaled_days_are_short(clock):
    limiter = Limiter(None, clock, LimiterConfig(day_s=864.0))
    name, reset = limiter.day_window(clock.now())
    assert 0 < reset - clock.now() <= 864
    assert limiter.day_window(reset)[0] != name


def test_it_models_without_quotas_are_not_limited(store, clock):
    limiter = Limiter(store, clock, LimiterConfig())
    assert all(limiter.take("unlimited", Quotas())[0] for _ in range(100))


def test_it_rejects_a_safety_factor_above_one():
    with pytest.raises(ValueError, match="safety"):
        LimiterConfig(safety=1.5)


# --- booked slots -------------------------------------------------------------------------

TWO_A_MINUTE = Quotas(rpm=2)  # at safety 1: a burst of 2, then one slot every 30 s


@pytest.fixture
def full(store, clock):
    """A limiter whose burst was just used up: the next slot is 30 s away."""
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, late_s=5.0))
    assert limiter.take(PRO, TWO_A_MINUTE)[0] and limiter.take(PRO, TWO_A_MINUTE)[0]
    return limiter


def test_it_waiting_requests_book_the_next_slots_first_come_first_served(full, clock):
    t = clock.now()
    assert full.book(PRO, TWO_A_MINUTE, "a", not_after=t + 600) == (True, pytest.approx(t + 30))
    assert full.book(PRO, TWO_A_MINUTE, "b", not_after=t + 600) == (True, pytest.approx(t + 60))
    # Asking again changes nothing: a request holds one slot per model.
    assert full.book(PRO, TWO_A_MINUTE, "a", not_after=t + 600) == (True, pytest.approx(t + 30))
    assert full.peek(PRO, TWO_A_MINUTE, "b") == (pytest.approx(t + 90), pytest.approx(t + 60))


def test_it_a_slot_beyond_the_limit_is_not_booked(full, clock):
    t = clock.now()
    full.book(PRO, TWO_A_MINUTE, "a", not_after=t + 600)
    assert full.book(PRO, TWO_A_MINUTE, "b", not_after=t + 50) == (False, pytest.approx(t + 60))
    assert full.book(PRO, TWO_A_MINUTE, "c", not_after=t + 600) == (True, pytest.approx(t + 60))


def test_it_the_holder_calls_in_its_slot_and_nobody_else_does(full, clock):
    t = clock.now()
    full.book(PRO, TWO_A_MINUTE, "a", not_after=t + 600)
    assert full.take(PRO, TWO_A_MINUTE, "a") == (False, pytest.approx(t + 30))  # not yet
    clock.advance(30)
    assert not full.take(PRO, TWO_A_MINUTE)[0]
    assert full.take(PRO, TWO_A_MINUTE, "a") == (True, None)
    assert full.peek(PRO, TWO_A_MINUTE, "a")[1] is None  # the booking is used up


def test_it_a_released_slot_goes_to_the_next_caller(full, clock):
    t = clock.now()
    full.book(PRO, TWO_A_MINUTE, "a", not_after=t + 600)
    assert full.release(PRO, "a") == pytest.approx(t + 30)
    assert full.next_free_at(PRO, TWO_A_MINUTE) == pytest.approx(t + 30)
    assert full.book(PRO, TWO_A_MINUTE, "b", not_after=t + 600) == (True, pytest.approx(t + 30))
    assert full.book(PRO, TWO_A_MINUTE, "c", not_after=t + 600) == (True, pytest.approx(t + 60))


def test_it_a_booking_used_too_late_is_void(full, clock):
    t = clock.now()
    full.book(PRO, TWO_A_MINUTE, "a", not_after=t + 600)
    clock.advance(30 + 5 + 1)  # past the slot and its lateness allowance
    assert full.peek(PRO, TWO_A_MINUTE, "a")[1] is None
    # Its step goes to the back of the line like anyone else: the next free slot.
    assert full.take(PRO, TWO_A_MINUTE, "a") == (False, pytest.approx(t + 60))


def test_it_releasing_without_a_booking_is_harmless(full, clock):
    assert full.release(PRO, "nobody") is None
    assert full.next_free_at(PRO, TWO_A_MINUTE) == pytest.approx(clock.now() + 30)


def test_it_a_slot_is_never_before_not_before(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    t = clock.now()
    assert limiter.take(PRO, TWO_A_MINUTE, not_before=t + 37) == (False, pytest.approx(t + 37))
    booked = limiter.book(PRO, TWO_A_MINUTE, "a", not_after=t + 600, not_before=t + 37)
    assert booked == (True, pytest.approx(t + 37))
