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
# Hours whose failure share is within this of the calmest are as good as it.
TOLERANCE = 0.02


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


def calmest_start(now: float, latest: float, rates: list[float], spread: float = 0.0) -> float:
    """When (epoch seconds) to start: now if no hour starting by `latest` is calmer than
    the present one; otherwise within one of the calmest later UTC hours (those within
    `TOLERANCE` of the lowest failure rate), chosen by `spread` (0 to 1), `spread`'s
    share of the way into it and never after `latest`. Requests with spread-out
    `spread`s, sent away from a peak together, thus arrive over all the calm hours
    instead of on the first one at once (the simulator showed that pile-up starving
    the requests of the hour)."""
    horizon = min(latest, now + 24 * HOUR)  # every hour of the day is seen by then
    hours = []
    at = (now // HOUR + 1) * HOUR
    while at <= horizon:
        hours.append(at)
        at += HOUR
    if not hours or min(rates[_hour(h)] for h in hours) >= rates[_hour(now)]:
        return now
    best = min(rates[_hour(h)] for h in hours)
    calm = [h for h in hours if rates[_hour(h)] <= best + TOLERANCE]
    position = min(max(spread, 0.0), 0.999999) * len(calm)
    chosen = calm[int(position)]
    return min(chosen + (position % 1) * HOUR, max(latest, chosen))


def _hour(moment: float) -> int:
    return datetime.fromtimestamp(moment, tz=UTC).hour
