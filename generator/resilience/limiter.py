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
from generator.resilience.stores import MemoryStore, Script, Store


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


@dataclass(frozen=True)
class Bucket:
    """A GCRA rate: at most `capacity` calls at once, refilled one per `interval_s`
    (equivalent to a token bucket of that capacity, as Google enforces its quotas)."""

    key: str
    interval_s: float
    capacity: int


@dataclass(frozen=True)
class Counter:
    """A fixed-window count (a per-day quota): at most `limit` until `reset_at`."""

    key: str
    limit: int
    reset_at: float


# --- the shared state: each Lua script with its in-memory twin --------------------------
#
# A bucket's key holds its theoretical arrival time (TAT); a counter's key its count.

# KEYS: buckets then counters. ARGV: now, dry_run, n_buckets, then (interval, capacity) per
# bucket, then (limit, reset_at) per counter. Returns {granted, retry_at or -1}.
_RESERVE_LUA = """
local now = tonumber(ARGV[1])
local dry = ARGV[2] == '1'
local nb = tonumber(ARGV[3])
local retry = -1
local tats = {}
for i = 1, nb do
  local interval = tonumber(ARGV[3 + 2 * i - 1])
  local capacity = tonumber(ARGV[3 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * capacity
  -- A microsecond of tolerance: sums of float intervals must not lose the last slot.
  if now < allow_at - 1e-6 then
    if allow_at > retry then retry = allow_at end
  end
  tats[i] = {new_tat, interval * capacity}
end
local base = 3 + 2 * nb
for j = nb + 1, #KEYS do
  local k = j - nb
  local limit = tonumber(ARGV[base + 2 * k - 1])
  local reset_at = tonumber(ARGV[base + 2 * k])
  local count = tonumber(redis.call('GET', KEYS[j]) or 0)
  if count >= limit then
    if reset_at > retry then retry = reset_at end
  end
end
if retry >= 0 then return {0, tostring(retry)} end
if dry then return {1, '-1'} end
for i = 1, nb do
  redis.call('SET', KEYS[i], tostring(tats[i][1]), 'PX', math.ceil((tats[i][1] - now + 1) * 1000))
end
for j = nb + 1, #KEYS do
  local k = j - nb
  local reset_at = tonumber(ARGV[base + 2 * k])
  redis.call('INCR', KEYS[j])
  redis.call('PEXPIRE', KEYS[j], math.ceil((reset_at - now + 60) * 1000))
end
return {1, '-1'}
"""


def _reserve_twin(db: MemoryStore, keys, args):
    now, dry, nb = float(args[0]), args[1] == "1", int(args[2])
    retry = -1.0
    tats = []
    for i in range(nb):
        interval, capacity = float(args[3 + 2 * i]), int(args[4 + 2 * i])
        tat = max(float(db.get(keys[i], now, now)), now)
        new_tat = tat + interval
        allow_at = new_tat - interval * capacity
        if now < allow_at - 1e-6:  # as in the Lua script
            retry = max(retry, allow_at)
        tats.append(new_tat)
    base = 3 + 2 * nb
    counters = [
        (keys[j], int(args[base + 2 * k]), float(args[base + 2 * k + 1]))
        for k, j in enumerate(range(nb, len(keys)))
    ]
    for key, limit, reset_at in counters:
        if db.get(key, now, 0) >= limit:
            retry = max(retry, reset_at)
    if retry >= 0:
        return [0, repr(retry)]
    if dry:
        return [1, "-1"]
    for key, tat in zip(keys, tats, strict=False):
        db.set(key, tat, tat + 1)
    for key, _, reset_at in counters:
        db.set(key, db.get(key, now, 0) + 1, reset_at + 60)
    return [1, "-1"]


# KEYS: buckets then counters. Returns their raw values (a TAT, a count or nil).
_READ_LUA = """
return redis.call('MGET', unpack(KEYS))
"""


def _read_twin(db: MemoryStore, keys, args):
    now = float(args[0])
    values = [db.get(key, now) for key in keys]
    return [None if v is None else repr(v) if isinstance(v, float) else str(v) for v in values]


RESERVE = Script(_RESERVE_LUA, _reserve_twin)
READ = Script(_READ_LUA, _read_twin)


def _bucket_used(raw, bucket: Bucket, now: float) -> int:
    """Slots in use in a GCRA bucket: how far its theoretical arrival time is ahead."""
    if raw is None:
        return 0
    ahead = float(raw) - now
    return max(0, min(bucket.capacity, math.ceil(ahead / bucket.interval_s - 1e-9)))


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

    def _reserve(self, model: str, quotas: Quotas, dry_run: bool) -> tuple[bool, float | None]:
        now = self.clock.now()
        buckets, counters, _ = self._limits(model, quotas, now)
        if not buckets and not counters:
            return True, None
        keys = [b.key for b in buckets] + [c.key for c in counters]
        args: list = [repr(now), "1" if dry_run else "0", len(buckets)]
        for b in buckets:
            args += [repr(b.interval_s), b.capacity]
        for c in counters:
            args += [c.limit, repr(c.reset_at)]
        granted, retry = self.store.run(RESERVE, keys, args)
        retry_at = float(retry)
        return bool(granted), (None if retry_at < 0 else retry_at)

    def reserve(self, model: str, quotas: Quotas) -> tuple[bool, float | None]:
        """Take one call (one image) from every quota of `model`, or nothing: then the
        time at which all of them have room."""
        return self._reserve(model, quotas, dry_run=False)

    def next_free_at(self, model: str, quotas: Quotas) -> float | None:
        """When a reservation would succeed (None: now), without taking one."""
        granted, retry_at = self._reserve(model, quotas, dry_run=True)
        return None if granted else retry_at

    def usage(self, model: str, quotas: Quotas) -> dict:
        """{"rpm": {"used": n, "limit": n}, ...} against the limits the workers keep to."""
        now = self.clock.now()
        buckets, counters, names = self._limits(model, quotas, now)
        keys = [b.key for b in buckets] + [c.key for c in counters]
        values = self.store.run(READ, keys, [repr(now)]) if keys else []
        used = [_bucket_used(v, b, now) for v, b in zip(values, buckets, strict=False)]
        used += [int(v or 0) for v in values[len(buckets) :]]
        return {
            name: {"used": u, "limit": limit} for (name, limit), u in zip(names, used, strict=True)
        }
