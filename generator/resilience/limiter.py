"""The client-side limiter for the upstream quotas in the catalogue, shared by every
worker through a Store.

Google enforces RPM and images per minute as token buckets per Cloud project (several
keys share one quota), and requests per day as a count that resets at midnight Pacific.
The limiter mirrors that: a GCRA bucket per per-minute quota and a fixed-window counter
per day, all reserved in one atomic operation (one Lua script in Redis) so that no two
workers can take the last slot, and a call that would break any quota takes none. Each
limit is scaled by a safety factor (85 % by default): calls in flight, clock skew and
other clients of the same project must not turn our traffic into 429s.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from generator.resilience.clock import Clock
from generator.resilience.stores import Bucket, Counter, Store


@dataclass(frozen=True)
class LimiterConfig:
    safety: float = 0.85  # the share of each catalogue quota the workers may use
    minute_s: float = 60.0  # the length of a "per minute" quota
    day_s: float = 86400.0  # the length of a "per day" quota (shorter in scaled drills)
    day_zone: str = "America/Los_Angeles"  # Google resets daily quotas at Pacific midnight

    def __post_init__(self):
        if not 0 < self.safety <= 1:
            raise ValueError("the safety factor must be in (0, 1]")
        if self.minute_s <= 0 or self.day_s <= 0:
            raise ValueError("quota periods must be positive")


@dataclass(frozen=True)
class Quotas:
    """A model's upstream quotas (None: unknown or unlimited)."""

    rpm: int | None = None
    ipm: int | None = None
    rpd: int | None = None


class Limiter:
    def __init__(self, store: Store, clock: Clock, config: LimiterConfig):
        self.store = store
        self.clock = clock
        self.config = config

    def effective(self, limit: int) -> int:
        return max(1, math.floor(limit * self.config.safety))

    def day_window(self, now: float) -> tuple[str, float]:
        """(a name for the current day, when it ends). Real days follow the upstream's
        calendar (midnight Pacific, daylight saving included); scaled days are
        `day_s` long, aligned to the same zone's offset."""
        zone = ZoneInfo(self.config.day_zone)
        local = datetime.fromtimestamp(now, tz=zone)
        if self.config.day_s == 86400.0:
            midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time())
            reset = midnight.replace(tzinfo=zone).astimezone(UTC).timestamp()
            return local.date().isoformat(), reset
        offset = local.utcoffset().total_seconds()
        index = math.floor((now + offset) / self.config.day_s)
        return f"d{index}", (index + 1) * self.config.day_s - offset

    def _limits(self, model: str, quotas: Quotas, now: float):
        buckets, counters, names = [], [], []
        for name, limit in (("rpm", quotas.rpm), ("ipm", quotas.ipm)):
            if limit:
                n = self.effective(limit)
                buckets.append(Bucket(f"limit:{model}:{name}", self.config.minute_s / n, n))
                names.append((name, n))
        if quotas.rpd:
            day, reset = self.day_window(now)
            n = self.effective(quotas.rpd)
            counters.append(Counter(f"limit:{model}:rpd:{day}", n, reset))
            names.append(("rpd", n))
        return buckets, counters, names

    def reserve(self, model: str, quotas: Quotas) -> tuple[bool, float | None]:
        """Take one call (one image) from every quota of `model`, or nothing: then the
        time at which all of them have room."""
        now = self.clock.now()
        buckets, counters, _ = self._limits(model, quotas, now)
        if not buckets and not counters:
            return True, None
        return self.store.reserve(buckets, counters, now)

    def next_free_at(self, model: str, quotas: Quotas) -> float | None:
        """When a reservation would succeed (None: now), without taking one."""
        now = self.clock.now()
        buckets, counters, _ = self._limits(model, quotas, now)
        if not buckets and not counters:
            return None
        granted, retry_at = self.store.reserve(buckets, counters, now, dry_run=True)
        return None if granted else retry_at

    def usage(self, model: str, quotas: Quotas) -> dict:
        """{"rpm": {"used": n, "limit": n}, ...} against the limits the workers keep to."""
        now = self.clock.now()
        buckets, counters, names = self._limits(model, quotas, now)
        used = self.store.usage(buckets, counters, now)
        return {
            name: {"used": u, "limit": limit} for (name, limit), u in zip(names, used, strict=True)
        }
