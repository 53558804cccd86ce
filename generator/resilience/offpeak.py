"""Off-peak scheduling: the calmest hour before a deadline.

Pure: no Django. An economy request that cannot go through Batch mode waits in the
database until the hour of the day (UTC) in which its first model has failed least,
among the hours that still leave time to deliver before its deadline, then runs
through the normal chain.

The failure rate by hour is learned from the installation's own attempt log (the
monitoring page's heatmap, from the hourly rollups); docs/upstream.md's peak hours are
only the prior, worth `PRIOR_WEIGHT` attempts, that the log overrides as it fills.
"""

from datetime import UTC, datetime

# docs/upstream.md, "Peaks": the worst hours (UTC) are 16-19, then 01-03 and 12-15; the
# quietest 19-24 and 06-09. As failure shares of the first model's calls.
PRIOR_FAILURE_BY_HOUR = tuple(
    0.45 if 16 <= h < 19 else 0.30 if (1 <= h < 3 or 12 <= h < 15) else 0.10 if (h >= 19 or 6 <= h < 9) else 0.20
    for h in range(24)
)  # fmt: skip
# The prior counts as this many attempts in each hour: a few days of real traffic at an
# hour outweigh it, a handful of attempts does not.
PRIOR_WEIGHT = 20
HOUR = 3600.0


def learned_rates(
    counts: list[tuple[int, int]] | None,
    prior: tuple[float, ...] = PRIOR_FAILURE_BY_HOUR,
    weight: float = PRIOR_WEIGHT,
) -> list[float]:
    """The failure share per UTC hour: the log's (failed, total) per hour blended with
    the prior, as if the prior were `weight` attempts more in every hour."""
    counts = counts or [(0, 0)] * 24
    return [
        (failed + prior[h] * weight) / (total + weight) for h, (failed, total) in enumerate(counts)
    ]


def calmest_start(now: float, latest: float, rates: list[float]) -> float:
    """When (epoch seconds) to start: now, or the start of a later UTC hour no later
    than `latest`, whichever hour has the lowest failure rate; the earliest of equals,
    so that a tie never makes a request wait for nothing."""
    best_at, best_rate = now, rates[_hour(now)]
    at = (now // HOUR + 1) * HOUR
    # At most a day ahead: every hour of the day has been seen by then.
    while at <= min(latest, now + 24 * HOUR):
        rate = rates[_hour(at)]
        if rate < best_rate:
            best_at, best_rate = at, rate
        at += HOUR
    return best_at


def _hour(moment: float) -> int:
    return datetime.fromtimestamp(moment, tz=UTC).hour
