"""The client-side limiter for the upstream quotas in the catalogue, shared by every
worker through a Store.

Google enforces RPM and images per minute as token buckets per Cloud project (several
keys share one quota), and requests per day as a count that resets at midnight Pacific.
The limiter mirrors that: a GCRA bucket per per-minute quota and a fixed-window counter
per day, all taken in one atomic operation (one Lua script in Redis) so that no two
workers can take the last slot, and a call that would break any quota takes none. Each
limit is scaled by a safety factor (85 % by default): calls in flight, clock skew and
other clients of the same project must not turn our traffic into 429s. The scaled rate
stays fractional: 85 % of 2 requests a minute is 1.7 a minute, one every 35 s, not 1.

A slot is a time at which one call may go. `take()` asks for one now. A request that
will wait for a model whose quota has no headroom `book()`s the earliest free slot in
the future instead, first come first served across every worker: the GCRA bucket moves
on by one interval per slot booked, so the next request books the next slot, and a
request that sees its slot lies beyond its patience books nothing. The booking is kept
under the request's id; its next step calls in that slot (`take()` with the same
holder). A booking given up (a downgrade, a cancel) is `release()`d: its slot becomes
free for the next caller at that time, so no quota is lost. A booked slot used a little
late (the scheduler and the queue are not punctual) still counts as that slot, up to
`late_s`; after that the booking is void and the step takes a new one.
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
    late_s: float = 10.0  # how late a booked slot may still be used

    def __post_init__(self):
        if not 0 < self.safety <= 1:
            raise ValueError("the safety factor must be in (0, 1]")
        if self.minute_s <= 0 or self.day_s <= 0:
            raise ValueError("quota periods must be positive")
        if self.late_s < 0:
            raise ValueError("the lateness allowed for a booked slot must not be negative")


@dataclass(frozen=True)
class Quotas:
    """A model's upstream quotas (None: unknown or unlimited)."""

    rpm: int | None = None
    ipm: int | None = None
    rpd: int | None = None


@dataclass(frozen=True)
class Bucket:
    """A GCRA rate: at most `capacity` calls at once, refilled one per `interval_s`
    (equivalent to a token bucket of that capacity, as Google enforces its quotas). Its
    key holds the theoretical arrival time (TAT) of the next call."""

    key: str
    interval_s: float
    capacity: int


@dataclass(frozen=True)
class Counter:
    """A fixed-window count (a per-day quota): at most `limit` until `reset_at`. Its key
    holds the count."""

    key: str
    limit: int
    reset_at: float


# --- the shared state: the Lua script with its in-memory twin ----------------------------
#
# KEYS: the bookings (holder -> slot time), the freed slots (former holder -> slot time),
# then the buckets, then the counters. ARGV: mode, now, holder, not_after, not_before,
# late_s, the number of buckets, (interval, capacity) per bucket, (limit, reset_at) per
# counter. Modes:
#   take     a slot now: the holder's own booking if it is due, else a freed or a new
#            slot if one is free now. {1, slot} or {0, when one would be}
#   book     the holder's booking, or the earliest free slot if it is not after
#            not_after (then booked). {1, slot} or {0, the earliest slot}
#   peek     {1 if a slot is free now else 0, the earliest slot, the holder's booking
#            or -1}; changes nothing
#   release  drop the holder's booking; its slot, if still to come, is freed for others
# A slot is never earlier than not_before (a 429 from the upstream holds every caller
# back until then).
_SLOT_LUA = """
local mode, now, holder = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local not_after, not_before, late = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local nb = tonumber(ARGV[7])
local booked, freed = KEYS[1], KEYS[2]
-- Bookings and freed slots more than late_s in the past are void.
redis.call('ZREMRANGEBYSCORE', booked, '-inf', '(' .. (now - late))
redis.call('ZREMRANGEBYSCORE', freed, '-inf', '(' .. (now - late))
local own = holder ~= '' and tonumber(redis.call('ZSCORE', booked, holder)) or nil

local function keep(key, at)
  local ms = math.ceil((at - now + late + 60) * 1000)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

if mode == 'release' then
  if not own then return {0, '-1'} end
  redis.call('ZREM', booked, holder)
  if own >= now then
    redis.call('ZADD', freed, own, holder)
    keep(freed, own)
  end
  return {1, tostring(own)}
end
if own and mode ~= 'peek' then
  if mode == 'book' or own <= now + 1e-6 then
    if mode == 'take' then redis.call('ZREM', booked, holder) end
    return {1, tostring(own)}
  end
  return {0, tostring(own)}
end

-- The earliest new slot that every bucket and counter allows.
local slot = math.max(now, not_before)
for i = 1, nb do
  local interval, capacity = tonumber(ARGV[6 + 2 * i]), tonumber(ARGV[7 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[2 + i]) or now)
  slot = math.max(slot, tat - interval * (capacity - 1))
end
local base = 7 + 2 * nb
for j = 1, #KEYS - 2 - nb do
  local limit, reset_at = tonumber(ARGV[base + 2 * j - 1]), tonumber(ARGV[base + 2 * j])
  if tonumber(redis.call('GET', KEYS[2 + nb + j]) or 0) >= limit then
    slot = math.max(slot, reset_at)
  end
end
-- A freed slot, if it is not later: someone else's booking given back.
local first = redis.call('ZRANGE', freed, 0, 0, 'WITHSCORES')
local reuse = nil
if #first > 0 and math.max(tonumber(first[2]), now, not_before) <= slot then
  reuse = first[1]
  slot = math.max(tonumber(first[2]), now, not_before)
end

-- A microsecond of tolerance below: sums of float intervals must not lose a slot.
if mode == 'peek' then
  return {slot <= now + 1e-6 and 1 or 0, tostring(slot), own and tostring(own) or '-1'}
end
if mode == 'take' and slot > now + 1e-6 then return {0, tostring(slot)} end
if mode == 'book' and slot > not_after then return {0, tostring(slot)} end
if reuse then
  redis.call('ZREM', freed, reuse)
else
  for i = 1, nb do
    local interval = tonumber(ARGV[6 + 2 * i])
    local tat = math.max(tonumber(redis.call('GET', KEYS[2 + i]) or now), slot) + interval
    redis.call('SET', KEYS[2 + i], tostring(tat), 'PX', math.ceil((tat - now + 1) * 1000))
  end
  for j = 1, #KEYS - 2 - nb do
    local reset_at = tonumber(ARGV[base + 2 * j])
    redis.call('INCR', KEYS[2 + nb + j])
    redis.call('PEXPIRE', KEYS[2 + nb + j], math.ceil((reset_at - now + 60) * 1000))
  end
end
if mode == 'book' then
  redis.call('ZADD', booked, slot, holder)
  keep(booked, slot)
end
return {1, tostring(slot)}
"""


def _slot_twin(db: MemoryStore, keys, args):
    mode, now, holder = args[0], float(args[1]), args[2]
    not_after, not_before, late = float(args[3]), float(args[4]), float(args[5])
    nb = int(args[6])
    booked_key, freed_key = keys[0], keys[1]
    # The sets as dicts; entries more than late_s in the past are void.
    booked = {h: t for h, t in db.get(booked_key, now, {}).items() if t >= now - late}
    freed = {h: t for h, t in db.get(freed_key, now, {}).items() if t >= now - late}
    db.set(booked_key, booked)
    db.set(freed_key, freed)
    own = booked.get(holder) if holder else None

    if mode == "release":
        if own is None:
            return [0, "-1"]
        del booked[holder]
        if own >= now:
            freed[holder] = own
        return [1, repr(own)]
    if own is not None and mode != "peek":
        if mode == "book" or own <= now + 1e-6:
            if mode == "take":
                del booked[holder]
            return [1, repr(own)]
        return [0, repr(own)]

    buckets = [(keys[2 + i], float(args[7 + 2 * i]), int(args[8 + 2 * i])) for i in range(nb)]
    base = 7 + 2 * nb
    counters = [
        (keys[2 + nb + j], int(args[base + 2 * j]), float(args[base + 2 * j + 1]))
        for j in range(len(keys) - 2 - nb)
    ]
    slot = max(now, not_before)
    for key, interval, capacity in buckets:
        tat = float(db.get(key, now, now))
        slot = max(slot, tat - interval * (capacity - 1))
    for key, limit, reset_at in counters:
        if db.get(key, now, 0) >= limit:
            slot = max(slot, reset_at)
    reuse = None
    if freed:
        first = min(freed, key=lambda h: (freed[h], h))
        if max(freed[first], now, not_before) <= slot:
            reuse, slot = first, max(freed[first], now, not_before)

    if mode == "peek":  # with the Lua script's tolerance of a microsecond
        return [1 if slot <= now + 1e-6 else 0, repr(slot), "-1" if own is None else repr(own)]
    if mode == "take" and slot > now + 1e-6:
        return [0, repr(slot)]
    if mode == "book" and slot > not_after:
        return [0, repr(slot)]
    if reuse is not None:
        del freed[reuse]
    else:
        for key, interval, _ in buckets:
            tat = max(float(db.get(key, now, now)), slot) + interval
            db.set(key, tat, tat + 1)
        for key, _, reset_at in counters:
            db.set(key, db.get(key, now, 0) + 1, reset_at + 60)
    if mode == "book":
        booked[holder] = slot
    return [1, repr(slot)]


# KEYS: buckets then counters. Returns their raw values (a TAT, a count or nil).
_READ_LUA = """
return redis.call('MGET', unpack(KEYS))
"""


def _read_twin(db: MemoryStore, keys, args):
    now = float(args[0])
    values = [db.get(key, now) for key in keys]
    return [None if v is None else repr(v) if isinstance(v, float) else str(v) for v in values]


SLOT = Script(_SLOT_LUA, _slot_twin)
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

    def rate(self, limit: int) -> float:
        """The calls a minute (or a day) the workers keep to: fractional, not rounded."""
        return limit * self.config.safety

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
                rate = self.rate(limit)
                # The burst is whole calls; the refill keeps the fraction.
                capacity = max(1, math.floor(rate))
                buckets.append(
                    Bucket(f"limit:{model}:{name}", self.config.minute_s / rate, capacity)
                )
                names.append((name, int(rate) if rate.is_integer() else round(rate, 2)))
        if quotas.rpd:
            day, reset = self.day_window(now)
            n = max(1, math.floor(self.rate(quotas.rpd)))
            counters.append(Counter(f"limit:{model}:rpd:{day}", n, reset))
            names.append(("rpd", n))
        return buckets, counters, names

    def _slot(self, mode, model, quotas, holder="", not_after=0.0, not_before=None):
        now = self.clock.now()
        buckets, counters, _ = self._limits(model, quotas, now)
        keys = [f"limit:{model}:booked", f"limit:{model}:freed"]
        keys += [b.key for b in buckets] + [c.key for c in counters]
        args: list = [mode, repr(now), holder, repr(not_after), repr(not_before or now)]
        args += [repr(self.config.late_s), len(buckets)]
        for b in buckets:
            args += [repr(b.interval_s), b.capacity]
        for c in counters:
            args += [c.limit, repr(c.reset_at)]
        return self.store.run(SLOT, keys, args)

    def take(
        self, model: str, quotas: Quotas, holder: str = "", not_before: float | None = None
    ) -> tuple[bool, float | None]:
        """A slot for a call to `model` now: `holder`'s booking if it is due, else one
        free now in every quota of the model. Refused: the time one would be."""
        granted, slot = self._slot("take", model, quotas, holder, not_before=not_before)
        return bool(granted), (None if granted else float(slot))

    def book(
        self,
        model: str,
        quotas: Quotas,
        holder: str,
        not_after: float,
        not_before: float | None = None,
    ) -> tuple[bool, float]:
        """(True, slot): `holder` holds the earliest free slot (or already held one);
        (False, slot): the earliest free slot is after `not_after`, nothing was booked."""
        booked, slot = self._slot("book", model, quotas, holder, not_after, not_before)
        return bool(booked), float(slot)

    def release(self, model: str, holder: str) -> float | None:
        """Give `holder`'s booking back (its slot is freed for others); the slot or None."""
        released, slot = self._slot("release", model, Quotas(), holder)
        return float(slot) if released else None

    def peek(
        self, model: str, quotas: Quotas, holder: str = "", not_before: float | None = None
    ) -> tuple[float | None, float | None]:
        """(when a new slot would be free, None: now; `holder`'s booking or None),
        without changing anything."""
        free, slot, own = self._slot("peek", model, quotas, holder, not_before=not_before)
        return (None if free else float(slot)), (None if own == "-1" else float(own))

    def next_free_at(self, model: str, quotas: Quotas) -> float | None:
        """When a slot would be free (None: now), without taking one."""
        return self.peek(model, quotas)[0]

    def usage(self, model: str, quotas: Quotas) -> dict:
        """{"rpm": {"used": n, "limit": 17.0}, ...} against the limits the workers keep to
        (per minute: the fractional rate)."""
        now = self.clock.now()
        buckets, counters, names = self._limits(model, quotas, now)
        keys = [b.key for b in buckets] + [c.key for c in counters]
        values = self.store.run(READ, keys, [repr(now)]) if keys else []
        used = [_bucket_used(v, b, now) for v, b in zip(values, buckets, strict=False)]
        used += [int(v or 0) for v in values[len(buckets) :]]
        return {
            name: {"used": u, "limit": limit} for (name, limit), u in zip(names, used, strict=True)
        }
