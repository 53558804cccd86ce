"""Rollups equal the raw counts, windows read exactly, prune keeps the numbers."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from generator.models import Attempt
from monitoring import rollups
from monitoring.models import AttemptRollup, RequestRollup
from tests.factories import FLASH, PRO, make_request

NOW = datetime(2026, 11, 20, 14, 37, 20, tzinfo=UTC)


@pytest.fixture
def scenario(alice):
    """Requests spread over three days, each with one to three attempts."""
    outcomes = ["success", "overloaded", "rate_limited", "timeout"]
    for i in range(60):
        created = NOW - timedelta(minutes=71 * i + 3)
        fail = i % 4 == 1
        make_request(
            alice,
            created=created,
            status="failed" if fail else "succeeded",
            strategy="quality-first" if i % 2 else "stability-first",
            fell_back=i % 3 == 0,
            tti_s=5 + i,
            attempts=[
                (PRO, outcomes[(i + k) % 4], 1 + k * 3, 800 * (i + 1) + k, 503 if k else 200)
                for k in range(1 + i % 3)
            ],
        )
    return alice


def _sum(rows, key):
    counts = Counter()
    for row in rows:
        counts[tuple(row[k] for k in key)] += row["count"]
    return +counts


def test_it_rolls_up_attempts_to_the_raw_counts(scenario):
    rollups.roll_up(now=NOW)
    raw = Counter(Attempt.objects.values_list("model", "outcome"))
    for period in ("minute", "hour"):
        rolled = Counter()
        for row in AttemptRollup.objects.filter(period=period).values():
            rolled[(row["model"], row["outcome"])] += row["count"]
        assert rolled == raw
    assert sum(r.latency_sum_ms for r in AttemptRollup.objects.filter(period="hour")) == sum(
        Attempt.objects.values_list("latency_ms", flat=True)
    )


def test_it_rolls_up_requests_by_finish_time_with_durations(scenario):
    rollups.roll_up(now=NOW)
    rows = RequestRollup.objects.filter(period="hour")
    assert sum(r.count for r in rows) == 60
    succeeded = [r for r in rows if r.status == "succeeded"]
    assert sum(r.tti_count for r in succeeded) == 45
    # tti_s is 5 + i seconds for every succeeded request i.
    assert sum(r.tti_sum_ms for r in succeeded) == sum(
        (5 + i) * 1000 for i in range(60) if i % 4 != 1
    )
    assert sum(r.wait_sum_ms for r in rows) == 60 * 2000


def test_it_reads_a_window_exactly_across_rollups_and_the_raw_tail(scenario, alice):
    rollups.roll_up(now=NOW - timedelta(hours=2))
    # Written after the roll-up: only the raw tail can count it.
    make_request(
        alice, created=NOW - timedelta(minutes=5), attempts=[(FLASH, "success", 1, 900, 200)]
    )
    start = NOW - timedelta(hours=26, minutes=13)
    expected = Counter(
        Attempt.objects.filter(started__gte=start, started__lt=NOW).values_list("model", "outcome")
    )
    assert _sum(rollups.attempts_in(start, NOW), ("model", "outcome")) == +expected
    by_bucket = rollups.attempts_in(start, NOW, by_bucket=True)
    assert sum(r["count"] for r in by_bucket) == sum(expected.values())


def test_it_reads_lifetime_totals(scenario):
    rollups.roll_up(now=NOW)
    assert sum(r["count"] for r in rollups.attempts_in(None, None)) == Attempt.objects.count()
    assert sum(r["count"] for r in rollups.requests_in(None, None)) == 60


def test_it_is_idempotent(scenario):
    rollups.roll_up(now=NOW)
    first = list(AttemptRollup.objects.order_by("period", "bucket", "model", "outcome").values())
    rollups.roll_up(now=NOW)
    again = list(AttemptRollup.objects.order_by("period", "bucket", "model", "outcome").values())
    strip = [{k: v for k, v in r.items() if k != "id"} for r in first]
    assert strip == [{k: v for k, v in r.items() if k != "id"} for r in again]


def test_it_prunes_old_attempts_but_keeps_the_numbers(scenario, settings):
    settings.MONITORING_RETENTION_DAYS = 1
    rollups.roll_up(now=NOW)
    before = _sum(rollups.attempts_in(None, None), ("model", "outcome"))
    total = Attempt.objects.count()
    result = rollups.prune(now=NOW)
    assert result["attempts"] > 0
    assert Attempt.objects.count() == total - result["attempts"]
    assert not Attempt.objects.filter(started__lt=NOW - timedelta(days=1)).exists()
    assert _sum(rollups.attempts_in(None, None), ("model", "outcome")) == before
