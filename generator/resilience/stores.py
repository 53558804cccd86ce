"""The shared store that the breaker and the limiter are written against.

Two stores with the same few atomic operations:
- RedisStore: production. Every operation that reads and then writes is one Lua script,
  so that all workers on all machines see one consistent state without locks.
- MemoryStore: one process (tests, and the benchmark's simulator on a virtual clock).
  The same operations in Python under a lock; tests/unit/resilience/test_breaker.py and
  test_limiter.py run against both to keep them equivalent.

Times are epoch seconds from the caller's Clock (generator/resilience/clock.py), so the
simulator's virtual time works too.
"""

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from generator.resilience.breaker import BreakerConfig


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


class Store(Protocol):
    def reserve(
        self, buckets: list[Bucket], counters: list[Counter], now: float, dry_run: bool = False
    ) -> tuple[bool, float | None]:
        """Take one slot in every bucket and counter, or none if any is full (then the
        time at which all would have room)."""

    def usage(self, buckets: list[Bucket], counters: list[Counter], now: float) -> list[int]:
        """Slots in use now, per bucket then per counter."""

    def breaker_record(
        self, key: str, kind: str, token: str, now: float, p: "BreakerConfig"
    ) -> dict | None:
        """Feed one call's result ("success", "failure" or "neutral"); returns the state
        transition it caused ({"from", "to", "reason"}) or None."""

    def breaker_admit(
        self, key: str, token: str, now: float, p: "BreakerConfig"
    ) -> tuple[bool, float | None, dict | None]:
        """(admitted, retry_at, transition): closed admits; open past its time admits one
        probe holding the lease `token`."""

    def breaker_release(self, key: str, token: str) -> None:
        """Give the probe lease back (the probe call did not happen)."""

    def breaker_read(self, key: str, now: float) -> dict:
        """{"state", "open_until", "window": [1 failure / 0 success...], "probe_until"}"""

    def push_capped(self, key: str, value: str, maxlen: int) -> None: ...

    def newest(self, key: str, n: int) -> list[str]: ...

    def set_until(self, key: str, value: float, until: float, now: float) -> None: ...

    def get_float(self, key: str, now: float) -> float | None: ...


# --- Redis --------------------------------------------------------------------------------

# KEYS: buckets then counters. ARGV: now, dry_run, n_buckets, then (interval, capacity) per
# bucket, then (limit, reset_at) per counter. Returns {granted, retry_at or -1}.
_RESERVE = """
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

_DURATION = """
local function duration(level)
  local d = tonumber(ARGV[4]) * tonumber(ARGV[6]) ^ level
  local cap = tonumber(ARGV[5])
  if d > cap then d = cap end
  return d
end
"""

# KEYS: state hash, window list, probe lease. ARGV: now, kind, token, open_s, open_max_s,
# multiplier, window, min_calls, failure_rate, cooldown_s.
_BREAKER_RECORD = (
    _DURATION
    + """
local now = tonumber(ARGV[1])
local kind = ARGV[2]
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or 0)
if state == 'closed' then
  if kind == 'neutral' then return nil end
  redis.call('LPUSH', KEYS[2], kind == 'failure' and 1 or 0)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[7]) - 1)
  local window = redis.call('LRANGE', KEYS[2], 0, -1)
  local failures = 0
  for _, v in ipairs(window) do failures = failures + tonumber(v) end
  local calls = #window
  if calls >= tonumber(ARGV[8]) and failures / calls >= tonumber(ARGV[9]) then
    local closed_at = tonumber(redis.call('HGET', KEYS[1], 'closed_at') or -1)
    if closed_at < 0 or now - closed_at >= tonumber(ARGV[10]) then level = 0 else level = level + 1 end
    local untl = now + duration(level)
    redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', tostring(untl), 'level', level)
    redis.call('DEL', KEYS[2])
    return {'closed', 'open', failures .. ' of the last ' .. calls .. ' calls failed', tostring(untl)}
  end
  return nil
end
if ARGV[3] == '' or redis.call('GET', KEYS[3]) ~= ARGV[3] then return nil end
redis.call('DEL', KEYS[3])
if kind == 'success' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_at', tostring(now))
  redis.call('HDEL', KEYS[1], 'open_until')
  redis.call('DEL', KEYS[2])
  return {state, 'closed', 'the probe call succeeded', '-1'}
elseif kind == 'failure' then
  level = level + 1
  local untl = now + duration(level)
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', tostring(untl), 'level', level)
  return {state, 'open', 'the probe call failed', tostring(untl)}
end
return nil
"""
)

# KEYS: state hash, probe lease. ARGV: now, token, lease_ms.
_BREAKER_ADMIT = """
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {1, '-1'} end
local untl = tonumber(redis.call('HGET', KEYS[1], 'open_until') or 0)
if now < untl then return {0, tostring(untl)} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'half_open')
  if state == 'open' then return {1, '-1', 'open', 'half_open', 'a probe call is let through'} end
  return {1, '-1'}
end
local ttl = redis.call('PTTL', KEYS[2])
return {0, tostring(now + math.max(ttl, 0) / 1000)}
"""

# KEYS: probe lease. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""


def _transition(raw) -> dict | None:
    if not raw:
        return None
    frm, to, reason, until = (x.decode() if isinstance(x, bytes) else str(x) for x in raw)
    until_f = float(until)
    return {
        "from": frm,
        "to": to,
        "reason": reason,
        "open_until": None if until_f < 0 else until_f,
    }


class RedisStore:
    def __init__(self, conn, prefix: str = "steadyshot:"):
        self.conn = conn
        self.prefix = prefix
        self._reserve = conn.register_script(_RESERVE)
        self._record = conn.register_script(_BREAKER_RECORD)
        self._admit = conn.register_script(_BREAKER_ADMIT)
        self._release = conn.register_script(_RELEASE)

    def _k(self, key: str) -> str:
        return self.prefix + key

    def reserve(self, buckets, counters, now, dry_run=False):
        keys = [self._k(b.key) for b in buckets] + [self._k(c.key) for c in counters]
        args: list = [repr(now), "1" if dry_run else "0", len(buckets)]
        for b in buckets:
            args += [repr(b.interval_s), b.capacity]
        for c in counters:
            args += [c.limit, repr(c.reset_at)]
        granted, retry = self._reserve(keys=keys, args=args)
        retry_at = float(retry)
        return bool(granted), (None if retry_at < 0 else retry_at)

    def usage(self, buckets, counters, now):
        keys = [self._k(b.key) for b in buckets] + [self._k(c.key) for c in counters]
        values = self.conn.mget(keys) if keys else []
        used = [_bucket_used(v, b, now) for v, b in zip(values, buckets, strict=False)]
        used += [int(v or 0) for v in values[len(buckets) :]]
        return used

    def _breaker_keys(self, key):
        return (
            self._k(f"breaker:{key}"),
            self._k(f"breaker:{key}:window"),
            self._k(f"breaker:{key}:probe"),
        )

    def breaker_record(self, key, kind, token, now, p):
        args = [repr(now), kind, token, p.open_s, p.open_max_s, p.multiplier, p.window]
        args += [p.min_calls, p.failure_rate, p.cooldown_s]
        return _transition(self._record(keys=list(self._breaker_keys(key)), args=args))

    def breaker_admit(self, key, token, now, p):
        state, _, probe = self._breaker_keys(key)
        lease_ms = max(1, int(p.probe_lease_s * 1000))
        raw = self._admit(keys=[state, probe], args=[repr(now), token, lease_ms])
        retry_at = float(raw[1])
        transition = None
        if len(raw) > 2:
            transition = _transition([raw[2], raw[3], raw[4], "-1"])
        return bool(raw[0]), (None if retry_at < 0 else retry_at), transition

    def breaker_release(self, key, token):
        self._release(keys=[self._breaker_keys(key)[2]], args=[token])

    def breaker_read(self, key, now):
        state_key, window_key, probe_key = self._breaker_keys(key)
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.hgetall(state_key).lrange(window_key, 0, -1).pttl(probe_key)
            fields, window, ttl = pipe.execute()
        fields = {k.decode(): v.decode() for k, v in fields.items()}
        return {
            "state": fields.get("state", "closed"),
            "open_until": float(fields["open_until"]) if "open_until" in fields else None,
            "window": [int(v) for v in window],
            "probe_until": now + ttl / 1000 if ttl and ttl > 0 else None,
        }

    def push_capped(self, key, value, maxlen):
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.lpush(self._k(key), value).ltrim(self._k(key), 0, maxlen - 1).execute()

    def newest(self, key, n):
        return [v.decode() for v in self.conn.lrange(self._k(key), 0, n - 1)]

    def set_until(self, key, value, until, now):
        ttl_ms = max(1, math.ceil((until - now) * 1000))
        self.conn.set(self._k(key), repr(value), px=ttl_ms)

    def get_float(self, key, now):
        raw = self.conn.get(self._k(key))
        return float(raw) if raw is not None else None


def _bucket_used(raw, bucket: Bucket, now: float) -> int:
    """Slots in use in a GCRA bucket: how far its theoretical arrival time is ahead."""
    if raw is None:
        return 0
    ahead = float(raw) - now
    return max(0, min(bucket.capacity, math.ceil(ahead / bucket.interval_s - 1e-9)))


# --- memory -------------------------------------------------------------------------------


class MemoryStore:
    """The same operations for one process; keys expire lazily against the caller's
    clock (the simulator's virtual time)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values: dict[str, tuple[object, float | None]] = {}  # key -> (value, expires_at)

    def _get(self, key, now, default=None):
        value, expires = self.values.get(key, (default, None))
        if expires is not None and now >= expires:
            del self.values[key]
            return default
        return value

    def _set(self, key, value, expires=None):
        self.values[key] = (value, expires)

    def reserve(self, buckets, counters, now, dry_run=False):
        with self.lock:
            retry = None
            tats = []
            for b in buckets:
                tat = max(self._get(b.key, now, now), now)
                new_tat = tat + b.interval_s
                allow_at = new_tat - b.interval_s * b.capacity
                if now < allow_at - 1e-6:  # as in the Lua script
                    retry = max(retry or allow_at, allow_at)
                tats.append(new_tat)
            for c in counters:
                if self._get(c.key, now, 0) >= c.limit:
                    retry = max(retry or c.reset_at, c.reset_at)
            if retry is not None:
                return False, retry
            if not dry_run:
                for b, tat in zip(buckets, tats, strict=True):
                    self._set(b.key, tat, tat + 1)
                for c in counters:
                    self._set(c.key, self._get(c.key, now, 0) + 1, c.reset_at + 60)
            return True, None

    def usage(self, buckets, counters, now):
        with self.lock:
            used = []
            for b in buckets:
                tat = self._get(b.key, now)
                used.append(_bucket_used(None if tat is None else str(tat), b, now))
            used += [self._get(c.key, now, 0) for c in counters]
            return used

    def _breaker(self, key, now) -> dict:
        return self._get(f"breaker:{key}", now) or {"state": "closed", "level": 0}

    def breaker_record(self, key, kind, token, now, p):
        with self.lock:
            b = self._breaker(key, now)
            self._set(f"breaker:{key}", b)
            if b["state"] == "closed":
                if kind == "neutral":
                    return None
                window = b.setdefault("window", [])
                window.insert(0, 1 if kind == "failure" else 0)
                del window[p.window :]
                failures, calls = sum(window), len(window)
                if calls >= p.min_calls and failures / calls >= p.failure_rate:
                    closed_at = b.get("closed_at")
                    recent = closed_at is not None and now - closed_at < p.cooldown_s
                    b["level"] = b["level"] + 1 if recent else 0
                    b.update(state="open", open_until=now + p.open_duration(b["level"]), window=[])
                    return {
                        "from": "closed",
                        "to": "open",
                        "reason": f"{failures} of the last {calls} calls failed",
                        "open_until": b["open_until"],
                    }
                return None
            if not token or self._get(f"breaker:{key}:probe", now) != token:
                return None
            self.values.pop(f"breaker:{key}:probe", None)
            frm = b["state"]
            if kind == "success":
                b.update(state="closed", closed_at=now, window=[])
                b.pop("open_until", None)
                return {
                    "from": frm,
                    "to": "closed",
                    "reason": "the probe call succeeded",
                    "open_until": None,
                }
            if kind == "failure":
                b["level"] += 1
                b.update(state="open", open_until=now + p.open_duration(b["level"]))
                return {
                    "from": frm,
                    "to": "open",
                    "reason": "the probe call failed",
                    "open_until": b["open_until"],
                }
            return None

    def breaker_admit(self, key, token, now, p):
        with self.lock:
            b = self._breaker(key, now)
            if b["state"] == "closed":
                return True, None, None
            if now < b["open_until"]:
                return False, b["open_until"], None
            probe_key = f"breaker:{key}:probe"
            if self._get(probe_key, now) is not None:
                return False, self.values[probe_key][1], None
            self._set(probe_key, token, now + p.probe_lease_s)
            frm = b["state"]
            b["state"] = "half_open"
            self._set(f"breaker:{key}", b)
            if frm == "open":
                return (
                    True,
                    None,
                    {
                        "from": "open",
                        "to": "half_open",
                        "reason": "a probe call is let through",
                        "open_until": None,
                    },
                )
            return True, None, None

    def breaker_release(self, key, token):
        with self.lock:
            probe_key = f"breaker:{key}:probe"
            if self.values.get(probe_key, (None,))[0] == token:
                del self.values[probe_key]

    def breaker_read(self, key, now):
        with self.lock:
            b = self._breaker(key, now)
            probe_key = f"breaker:{key}:probe"
            held = self._get(probe_key, now) is not None
            return {
                "state": b["state"],
                "open_until": b.get("open_until"),
                "window": list(b.get("window", [])),
                "probe_until": self.values[probe_key][1] if held else None,
            }

    def push_capped(self, key, value, maxlen):
        with self.lock:
            items = self.values.setdefault(key, ([], None))[0]
            items.insert(0, value)
            del items[maxlen:]

    def newest(self, key, n):
        with self.lock:
            return list(self.values.get(key, ([], None))[0][:n])

    def set_until(self, key, value, until, now):
        with self.lock:
            self._set(key, value, until)

    def get_float(self, key, now):
        with self.lock:
            return self._get(key, now)
