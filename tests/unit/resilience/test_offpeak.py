"""Off-peak scheduling's pure part: the failure rate by hour learned over its prior, and
the calmest start before a deadline."""

from datetime import UTC, datetime

from generator.resilience.offpeak import (
    PRIOR_FAILURE_BY_HOUR,
    PRIOR_WEIGHT,
    calmest_start,
    learned_rates,
)


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC).timestamp()


def test_it_without_a_log_the_prior_puts_the_peak_at_16_to_19_utc():
    rates = learned_rates(None)
    assert rates == list(PRIOR_FAILURE_BY_HOUR)
    assert max(rates) == rates[17] and rates[21] < rates[17] and rates[7] < rates[13]


def test_it_the_log_outweighs_the_prior_once_it_has_enough_calls():
    counts = [(0, 0)] * 24
    counts[21] = (90, 100)  # the evenings turned bad on this installation
    rates = learned_rates(counts)
    assert rates[21] > rates[17]
    few = [(0, 0)] * 24
    few[21] = (2, 2)  # two failures say little
    assert learned_rates(few)[21] == (2 + PRIOR_FAILURE_BY_HOUR[21] * PRIOR_WEIGHT) / 22
    assert learned_rates(few)[21] < learned_rates(few)[17]


def test_it_waits_from_the_peak_for_the_calm_evening():
    start = calmest_start(at(2, 16, 20), at(3, 9), learned_rates(None))
    assert start == at(2, 19)


def test_it_starts_now_when_now_is_as_calm_as_it_gets():
    rates = learned_rates(None)
    assert calmest_start(at(2, 20, 5), at(3, 9), rates) == at(2, 20, 5)


def test_it_never_starts_later_than_the_latest_start():
    # From the peak with only half an hour to spare: no calmer hour fits, go now.
    assert calmest_start(at(2, 16, 0), at(2, 16, 30), learned_rates(None)) == at(2, 16, 0)
    # From 12:10 until 15:00 at the latest: 15-16 (0.20) is calmer than 12-15 (0.30), and
    # 16:00 would be too late.
    assert calmest_start(at(2, 12, 10), at(2, 15, 0), learned_rates(None)) == at(2, 15)


def test_it_prefers_the_earliest_of_equally_calm_hours():
    flat = [0.2] * 24
    flat[3] = flat[5] = 0.05
    assert calmest_start(at(2, 1, 30), at(2, 23), flat) == at(2, 3)


def test_it_requests_sent_away_from_a_peak_spread_over_all_the_calm_hours():
    rates = learned_rates(None)
    starts = [calmest_start(at(2, 16, 20), at(2, 23, 59), rates, k / 10) for k in range(10)]
    # 19:00 to 24:00 are the calm hours of the prior: two starts in each.
    assert sorted(datetime.fromtimestamp(s, UTC).hour for s in starts) == [
        19, 19, 20, 20, 21, 21, 22, 22, 23, 23
    ]  # fmt: skip
    assert all(s <= at(2, 23, 59) for s in starts)
