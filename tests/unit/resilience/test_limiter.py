"""The upstream quota limiter, against real Redis (many threads) and in memory."""

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.resilience.clock import VirtualClock
from generator.resilience.limiter import Limiter, LimiterConfig, Quotas
from generator.resilience.stores import MemoryStore, Script

PRO = "gemini-3-pro-image-preview"


def replay(calls: list[float], quota: int, minute: float = 60.0) -> dict[str, bool]:
    """Whether upstreams of three kinds would accept these call times without a 429: a
    token bucket of `quota` refilled `quota` a minute (Google's, the sandbox's), a fixed
    calendar minute and a sliding minute, each of at most `quota` calls."""
    calls = sorted(calls)
    tokens, last, bucket = float(quota), calls[0] if calls else 0.0, True
    for t in calls:
        tokens = min(quota, tokens + (t - last) * quota / minute)
        last = t
        bucket = bucket and tokens >= 1 - 1e-9
        tokens -= 1
    per_minute: dict[int, int] = {}
    for t in calls:
        per_minute[int(t // minute)] = per_minute.get(int(t // minute), 0) + 1
    fixed = all(n <= quota for n in per_minute.values())
    sliding = all(b - a >= minute - 1e-9 for a, b in zip(calls, calls[quota:], strict=False))
    return {"token bucket": bucket, "fixed minute": fixed, "sliding minute": sliding}


def test_it_admits_the_whole_quota_at_once_then_waits_for_the_window(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.25))
    quotas = Quotas(rpm=20)
    granted = [limiter.take(PRO, quotas)[0] for _ in range(21)]
    assert granted == [True] * 20 + [False]
    ok, retry_at = limiter.take(PRO, quotas)
    assert not ok
    assert retry_at == pytest.approx(clock.now() + 60.25)
    assert limiter.next_free_at(PRO, quotas) == pytest.approx(retry_at)


def test_it_keeps_the_fraction_of_a_small_quota(store, clock):
    # 85 % of 2 a minute is 1.7 a minute: 2 calls in any 60 / 0.85 s, not 1 a minute.
    limiter = Limiter(store, clock, LimiterConfig(safety=0.85, margin_s=0.0))
    quotas = Quotas(rpm=2)
    t = clock.now()
    assert limiter.take(PRO, quotas)[0] and limiter.take(PRO, quotas)[0]
    slots = [limiter.book(PRO, quotas, f"r{i}", not_after=t + 3600)[1] for i in range(16)]
    window = 60 / 0.85
    assert slots == pytest.approx([t + (i // 2 + 1) * window for i in range(16)], abs=1e-3)
    assert sum(s < t + 600 for s in [t, t, *slots]) == 18  # 1.7 a minute: ~17 in 10 min


def test_it_uses_the_whole_quota_and_no_upstream_would_answer_429(store, clock):
    """Requests booking slots for an hour at safety 1: the full 2 a minute, and the call
    times pass a token bucket, a fixed minute and a sliding minute alike."""
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.25))
    quotas = Quotas(rpm=2)
    t = clock.now()
    slots = []
    for i in range(200):
        booked, slot = limiter.book(PRO, quotas, f"r{i}", not_after=t + 3600)
        if booked:
            slots.append(slot)
    assert len(slots) == 120  # 2 a minute, 60 minutes (the margin costs < 1 %)
    assert replay(slots, 2) == dict.fromkeys(
        ("token bucket", "fixed minute", "sliding minute"), True
    )


def test_it_refills_after_a_window(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.0))
    quotas = Quotas(rpm=6)
    assert all(limiter.take(PRO, quotas)[0] for _ in range(6))
    assert not limiter.take(PRO, quotas)[0]
    clock.advance(30)  # a token bucket would have 3 tokens; a sliding minute none
    assert not limiter.take(PRO, quotas)[0]
    clock.advance(30)
    assert all(limiter.take(PRO, quotas)[0] for _ in range(6))
    assert not limiter.take(PRO, quotas)[0]


def test_it_a_call_counts_against_requests_and_images_alike(store, clock):
    # Every call may return an image: the smaller of RPM and IPM decides.
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    assert limiter.take(PRO, Quotas(rpm=5, ipm=1))[0]
    assert not limiter.take(PRO, Quotas(rpm=5, ipm=1))[0]
    assert limiter.usage(PRO, Quotas(rpm=5, ipm=1)) == {
        "rpm": {"used": 1, "limit": 5},
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

ONE_A_MINUTE = Quotas(rpm=1)  # at safety 1 and no margin: one slot every 60 s


@pytest.fixture
def full(store, clock):
    """A limiter whose quota was just used: the next slot is 60 s away."""
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, late_s=5.0, margin_s=0.0))
    assert limiter.take(PRO, ONE_A_MINUTE)[0]
    return limiter


def test_it_waiting_requests_book_the_next_slots_first_come_first_served(full, clock):
    t = clock.now()
    assert full.book(PRO, ONE_A_MINUTE, "a", not_after=t + 600) == (True, pytest.approx(t + 60))
    assert full.book(PRO, ONE_A_MINUTE, "b", not_after=t + 600) == (True, pytest.approx(t + 120))
    # Asking again changes nothing: a request holds one slot per model.
    assert full.book(PRO, ONE_A_MINUTE, "a", not_after=t + 600) == (True, pytest.approx(t + 60))
    assert full.peek(PRO, ONE_A_MINUTE, "b") == (pytest.approx(t + 180), pytest.approx(t + 120))


def test_it_a_slot_beyond_the_limit_is_not_booked(full, clock):
    t = clock.now()
    full.book(PRO, ONE_A_MINUTE, "a", not_after=t + 600)
    assert full.book(PRO, ONE_A_MINUTE, "b", not_after=t + 100) == (False, pytest.approx(t + 120))
    assert full.book(PRO, ONE_A_MINUTE, "c", not_after=t + 600) == (True, pytest.approx(t + 120))


def test_it_the_holder_calls_in_its_slot_and_nobody_else_does(full, clock):
    t = clock.now()
    full.book(PRO, ONE_A_MINUTE, "a", not_after=t + 600)
    assert full.take(PRO, ONE_A_MINUTE, "a") == (False, pytest.approx(t + 60))  # not yet
    clock.advance(60)
    assert not full.take(PRO, ONE_A_MINUTE)[0]
    assert full.take(PRO, ONE_A_MINUTE, "a") == (True, None)
    assert full.peek(PRO, ONE_A_MINUTE, "a")[1] is None  # the booking is used up


def test_it_a_released_slot_goes_to_the_next_caller(full, clock):
    t = clock.now()
    full.book(PRO, ONE_A_MINUTE, "a", not_after=t + 600)
    assert full.release(PRO, "a") == pytest.approx(t + 60)
    assert full.next_free_at(PRO, ONE_A_MINUTE) == pytest.approx(t + 60)
    assert full.book(PRO, ONE_A_MINUTE, "b", not_after=t + 600) == (True, pytest.approx(t + 60))
    assert full.book(PRO, ONE_A_MINUTE, "c", not_after=t + 600) == (True, pytest.approx(t + 120))


def test_it_a_booking_used_too_late_is_void(full, clock):
    t = clock.now()
    full.book(PRO, ONE_A_MINUTE, "a", not_after=t + 600)
    full.book(PRO, ONE_A_MINUTE, "b", not_after=t + 600)
    clock.advance(60 + 5 + 1)  # past a's slot and its lateness allowance
    assert full.peek(PRO, ONE_A_MINUTE, "a")[1] is None
    # Its step goes to the back of the line like anyone else: after b's slot.
    assert full.take(PRO, ONE_A_MINUTE, "a") == (False, pytest.approx(t + 180))


def test_it_a_late_holder_calls_and_the_next_booking_moves_so_no_429(full, clock):
    """Slots are kept where the calls really went: a holder 4 s late still calls (its
    place in line is kept), and the next holder's slot moves 4 s on, so that calls a
    minute apart stay a minute apart at the upstream."""
    t = clock.now()
    full.book(PRO, ONE_A_MINUTE, "a", not_after=t + 600)
    full.book(PRO, ONE_A_MINUTE, "b", not_after=t + 600)
    clock.advance(64)
    assert full.take(PRO, ONE_A_MINUTE, "a") == (True, None)
    clock.t = t + 120
    assert full.take(PRO, ONE_A_MINUTE, "b") == (False, pytest.approx(t + 124))
    assert full.peek(PRO, ONE_A_MINUTE, "b")[1] == pytest.approx(t + 124)
    clock.t = t + 124
    assert full.take(PRO, ONE_A_MINUTE, "b") == (True, None)
    assert replay([t, t + 64, t + 124], 1) == dict.fromkeys(
        ("token bucket", "fixed minute", "sliding minute"), True
    )


def test_it_releasing_without_a_booking_is_harmless(full, clock):
    assert full.release(PRO, "nobody") is None
    assert full.next_free_at(PRO, ONE_A_MINUTE) == pytest.approx(clock.now() + 60)


def test_it_a_slot_is_never_before_not_before(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    t = clock.now()
    assert limiter.take(PRO, ONE_A_MINUTE, not_before=t + 37) == (False, pytest.approx(t + 37))
    booked = limiter.book(PRO, ONE_A_MINUTE, "a", not_after=t + 600, not_before=t + 37)
    assert booked == (True, pytest.approx(t + 37))


def test_it_a_released_booking_gives_its_daily_count_back(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0))
    quotas = Quotas(rpd=1)
    t = clock.now()
    assert limiter.book(PRO, quotas, "a", not_after=t + 600) == (True, pytest.approx(t))
    assert not limiter.take(PRO, quotas)[0]
    limiter.release(PRO, "a", quotas)
    assert limiter.take(PRO, quotas)[0]


# --- what the upstream's 429s teach -------------------------------------------------------


def emulate(limiter, clock, quotas, real, minutes, told=None, retry_s=20.0, others=()):
    """A client calling as fast as the limiter lets it for `minutes`, against an upstream
    whose quota is a token bucket of `real` calls a minute (shared with other clients,
    whose calls come at the times in `others`); a 429 holds the client back `retry_s`
    (the server's retryDelay) and teaches the limiter (stating `told`, if given).
    Returns (the times of the calls the upstream took, the times of the 429s)."""
    start = clock.now()
    tokens, last = float(real), start
    pending = sorted(others)
    taken, refused, cooldown = [], [], None

    def bucket(t):
        nonlocal tokens, last
        tokens, last = min(real, tokens + (t - last) * real / 60.0), t

    while clock.now() < start + minutes * 60:
        now = clock.now()
        while pending and pending[0] <= now:
            bucket(pending[0])
            tokens -= min(1.0, tokens)
            pending.pop(0)
        ok, at = limiter.take(PRO, quotas, not_before=cooldown)
        if not ok:
            clock.advance(max(at - now, 0.01))
            continue
        bucket(now)
        if tokens >= 1 - 1e-9:
            tokens -= 1
            taken.append(now)
        else:
            refused.append(now)
            limiter.learn(PRO, quotas, told=told)
            cooldown = now + retry_s
    return taken, refused


def test_it_keeps_to_the_quota_a_429_states_and_sends_no_call_into_another(store, clock):
    """The catalogue says 20 a minute, the upstream allows 2 and says so in its 429
    (quotaValue): after that 429 the limiter keeps to 2 a window, and replayed through
    that upstream the later calls meet no 429."""
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.0))
    quotas = Quotas(rpm=20)
    t = clock.now()
    assert all(limiter.take(PRO, quotas)[0] for _ in range(3))  # the 3rd meets a 429
    assert limiter.learn(PRO, quotas, told=2) == 2
    assert limiter.usage(PRO, quotas)["rpm"]["limit"] == 2
    calls = []
    for i in range(30):
        booked, slot = limiter.book(PRO, quotas, f"r{i}", not_after=t + 3600)
        assert booked
        calls.append(slot)
    assert replay([t, t, *calls], 2) == dict.fromkeys(
        ("token bucket", "fixed minute", "sliding minute"), True
    )
    assert len([c for c in calls if c < t + 600]) == 18  # 2 a minute from t + 60 s: all of it


def test_it_a_stated_quota_above_the_catalogues_changes_nothing(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.0))
    quotas = Quotas(rpm=20)
    for _ in range(21):
        limiter.take(PRO, quotas)
    assert limiter.learn(PRO, quotas, told=50) <= 20


def test_it_a_429_from_another_client_in_a_quiet_minute_costs_half_the_quota_a_while(store, clock):
    """One call of ours in the minute, and a 429 for it because another client of the
    project used the quota: the limit halves (not 1 a minute for an hour), holds for the
    quiet period, then grows a call a minute back to the catalogue's."""
    config = LimiterConfig(safety=1.0, margin_s=0.0, recover_s=300.0)
    limiter = Limiter(store, clock, config)
    quotas = Quotas(rpm=20)
    assert limiter.take(PRO, quotas)[0]
    assert limiter.learn(PRO, quotas) == 10
    limits = []
    for _ in range(20):
        clock.advance(60)
        limits.append(limiter.usage(PRO, quotas)["rpm"]["limit"])
    assert limits[:4] == [10] * 4  # the quiet period: 5 minutes
    assert limits[4:9] == [11, 12, 13, 14, 15]
    assert limits[-1] == 20
    assert limiter.per_window(PRO, quotas) == 20


def test_it_a_burst_of_429s_for_calls_in_flight_together_halves_the_limit_once(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.0))
    quotas = Quotas(rpm=20)
    for _ in range(8):
        assert limiter.take(PRO, quotas)[0]
    learned = [limiter.learn(PRO, quotas) for _ in range(3)]  # the 6th to 8th refused
    assert learned == [10, 10, 10]


@pytest.mark.parametrize(("real", "minutes"), [(10, 1), (5, 3), (2, 5)])
def test_it_finds_a_smaller_real_quota_within_minutes_then_meets_few_429s(
    store, clock, real, minutes
):
    """The catalogue says 20 a minute and the upstream, which does not state its quota,
    allows 10, 5 or 2: the limit comes down to it in a few minutes of emulated time, the
    client then uses all of it, and the 429s after that are the rare probes above it."""
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.0))
    quotas = Quotas(rpm=20)
    _, finding = emulate(limiter, clock, quotas, real, minutes)
    assert limiter.per_window(PRO, quotas) <= real
    taken, refused = emulate(limiter, clock, quotas, real, 60)
    assert len(refused) <= 4  # probes 5, 10, 20, 40 minutes after the last 429
    assert all(t >= finding[-1] + 300 for t in refused)
    assert len(taken) >= 0.95 * real * 60


def test_it_finds_a_quota_other_clients_share_and_recovers_when_they_stop(store, clock):
    """Another client of the project takes 12 of the 20 a minute for 20 minutes, then
    stops: the limit comes down to about what is left, then grows back to the whole."""
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.0))
    quotas = Quotas(rpm=20)
    start = clock.now()
    others = [start + i * 5.0 for i in range(12 * 20)]
    taken, _ = emulate(limiter, clock, quotas, 20, 20, others=others)
    late = [t for t in taken if t >= start + 600]
    assert 0.8 * 8 * 10 <= len(late) <= 8 * 10 + 1
    assert limiter.per_window(PRO, quotas) <= 10
    taken, _ = emulate(limiter, clock, quotas, 20, 40)
    assert limiter.per_window(PRO, quotas) == 20
    assert len([t for t in taken if t >= clock.now() - 600]) >= 190


def test_it_drops_a_limit_an_older_version_learned(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.0))
    quotas = Quotas(rpm=20)
    put = Script("redis.call('SET', KEYS[1], ARGV[1])", lambda db, k, a: db.set(k[0], a[0]))
    store.run(put, [f"limit:{PRO}:learned"], [f"1:{clock.now() + 3600!r}"])  # "limit:until"
    assert limiter.per_window(PRO, quotas) == 20
    assert limiter.take(PRO, quotas)[0]
    assert limiter.learn(PRO, quotas) == 10


def test_it_a_model_without_a_known_quota_learns_one(store, clock):
    limiter = Limiter(store, clock, LimiterConfig(safety=1.0, margin_s=0.0))
    for _ in range(4):
        assert limiter.take("unknown", Quotas())[0]
    assert limiter.learn("unknown", Quotas()) == 3
    assert [limiter.take("unknown", Quotas())[0] for _ in range(3)] == [False] * 3


# --- whatever the callers do --------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.sampled_from(["take", "book", "use", "release"]),
        st.integers(0, 3),  # which request
        st.floats(0, 20),  # seconds that pass first (but before using a booking)
        st.floats(0, 12),  # how late a booked request comes for its slot
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(quota=st.integers(1, 4), safety=st.sampled_from([1.0, 0.85]), ops=steps)
def test_it_no_upstream_answers_429_whatever_the_callers_do(quota, safety, ops):
    """Requests take slots now, book them, come late for them or give them up, in any
    order: the calls that go pass a token bucket, a fixed minute and a sliding minute of
    the quota alike."""
    clock = VirtualClock(1_700_000_000.0)
    limiter = Limiter(MemoryStore(), clock, LimiterConfig(safety=safety, margin_s=0.0))
    quotas, calls, booked = Quotas(rpm=quota), [], {}
    for op, who, wait, late in ops:
        if op != "use":
            clock.advance(wait)
        holder = f"r{who}"
        if op == "take" and limiter.take(PRO, quotas)[0]:
            calls.append(clock.now())
        elif op == "book":
            ok, slot = limiter.book(PRO, quotas, holder, not_after=clock.now() + 600)
            if ok:
                booked[holder] = slot
        elif op == "use" and holder in booked:
            clock.t = max(clock.now(), booked.pop(holder) + late)
            granted, _ = limiter.take(PRO, quotas, holder)
            if granted:
                calls.append(clock.now())
        elif op == "release":
            limiter.release(PRO, holder, quotas)
            booked.pop(holder, None)
    assert replay(calls, quota) == dict.fromkeys(
        ("token bucket", "fixed minute", "sliding minute"), True
    )
