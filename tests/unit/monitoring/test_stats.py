"""The pure helpers: exact window ranges and histogram percentiles (no database)."""

from datetime import UTC, datetime, timedelta

import pytest

from monitoring.stats import Window, percentile, rate, split_ranges

T = datetime(2026, 11, 20, 14, 37, tzinfo=UTC)


def test_it_covers_a_window_with_minutes_at_the_edges_and_hours_between():
    start, tail = T - timedelta(hours=5), T
    ranges = split_ranges(start, tail)
    assert ranges == [
        ("minute", start, datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("hour", datetime(2026, 11, 20, 10, tzinfo=UTC), datetime(2026, 11, 20, 14, tzinfo=UTC)),
        ("minute", datetime(2026, 11, 20, 14, tzinfo=UTC), tail),
    ]


def test_it_uses_minutes_only_inside_one_hour():
    assert split_ranges(T - timedelta(minutes=20), T) == [("minute", T - timedelta(minutes=20), T)]


def test_it_reads_nothing_from_rollups_before_the_first_run():
    assert split_ranges(T, None) == []


def test_it_interpolates_percentiles_inside_a_bucket():
    bounds = (1000, 2000, 5000)
    assert percentile([0, 10, 0, 0], bounds, 0.5) == 1500
    assert percentile([10, 0, 0, 0], bounds, 1.0) == 1000
    assert percentile([0, 0, 0, 4], bounds, 0.99) == 5000  # open bucket: "at least"
    assert percentile([0, 0, 0, 0], bounds, 0.5) is None


def test_it_hides_rates_below_the_minimum():
    assert rate(3, 4, minimum=5) is None
    assert rate(7, 10, minimum=5) == 0.7


def test_it_refuses_an_unknown_window():
    with pytest.raises(ValueError, match="choose one of 15m, 1h, 24h, 7d"):
        Window.ending("2y", T)


def test_it_slots_a_day_by_the_hour():
    window = Window.ending("24h", T)
    assert len(window.slot_starts()) == 24
    assert window.previous().end == window.start
