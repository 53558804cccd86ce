"""Pure aggregation helpers: windows, percentiles from histograms, rates.

No Django here: the page, the alerts and /metrics all use these, and the tests check
them without a database.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOWS = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
WINDOW_LABELS = {"15m": "15 min", "1h": "1 hour", "24h": "24 hours", "7d": "7 days"}
# Time-series slots per window: one bar per minute, 5 minutes, hour or 6 hours.
SLOTS = {
    "15m": timedelta(minutes=1),
    "1h": timedelta(minutes=5),
    "24h": timedelta(hours=1),
    "7d": timedelta(hours=6),
}


# The request time series (delivered rate, fallback share, p95 time to image): coarser
# slots than the error mix, so each point holds enough requests to be a rate at all.
SERIES_SLOTS = {
    "15m": timedelta(minutes=3),
    "1h": timedelta(minutes=5),
    "24h": timedelta(hours=2),
    "7d": timedelta(hours=12),
}


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + timedelta(hours=1)


@dataclass(frozen=True)
class Window:
    """[start, end): start on a minute boundary (the rollups' finest grain), end now."""

    key: str
    start: datetime
    end: datetime

    @classmethod
    def ending(cls, key: str, now: datetime) -> "Window":
        if key not in WINDOWS:
            raise ValueError(f"Unknown window {key!r}; choose one of {', '.join(WINDOWS)}.")
        return cls(key, floor_minute(now - WINDOWS[key]), now)

    def previous(self) -> "Window":
        length = WINDOWS[self.key]
        return Window(self.key, self.start - length, self.start)

    @property
    def slot(self) -> timedelta:
        return SLOTS[self.key]

    @property
    def series_slot(self) -> timedelta:
        return SERIES_SLOTS[self.key]

    def slot_starts(self, step: timedelta | None = None) -> list[datetime]:
        step = step or self.slot
        starts, moment = [], self.start
        while moment < self.end:
            starts.append(moment)
            moment += step
        return starts

    def slot_index(self, moment: datetime, step: timedelta | None = None) -> int:
        return int((moment - self.start) / (step or self.slot))


def split_ranges(start: datetime | None, tail_start: datetime | None):
    """The rollup ranges that cover [start, tail_start) exactly: minutes at the ragged
    edges, whole hours in the middle. Yields (period, from, to); None means open."""
    if tail_start is None:
        return []
    if start is not None and start >= tail_start:
        return []
    if start is None:
        end_h = floor_hour(tail_start)
        return [("hour", None, end_h), ("minute", end_h, tail_start)]
    h0, h1 = ceil_hour(start), floor_hour(tail_start)
    if h0 >= h1:
        return [("minute", start, tail_start)]
    return [("minute", start, h0), ("hour", h0, h1), ("minute", h1, tail_start)]


def percentile(hist: list[int], bounds: tuple[int, ...], q: float) -> float | None:
    """The q-quantile (0-1) of a histogram, interpolated linearly inside its bucket.

    The open last bucket reports its lower bound: "at least this much"."""
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            low = bounds[i - 1] if i > 0 else 0
            if i >= len(bounds):
                return float(low)
            return low + (bounds[i] - low) * ((rank - seen) / n)
        seen += n
    return float(bounds[-1])


def rate(part: int, whole: int, minimum: int = 1) -> float | None:
    """part / whole, or None below the minimum count: a rate over three requests says
    nothing, and the page shows the count instead."""
    if whole < max(minimum, 1):
        return None
    return part / whole
