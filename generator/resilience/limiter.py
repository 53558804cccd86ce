"""The client-side limiter for the upstream quotas in the catalogue, shared by every
worker through a Store.

Google enforces requests and images per minute per Cloud project (several keys share
one quota) and requests per day as a count that resets at midnight Pacific. Other
upstreams count a minute differently: a token bucket, a fixed calendar minute, a
sliding window. The limiter keeps to all of them at once with a sliding log: at most N
calls in any window of one minute (N: the smaller of the model's RPM and IPM), which
each of those semantics accepts (a token bucket of N refilled N a minute admits any
such sequence; a fixed minute is one such window), and which uses the whole quota over
time (N calls a minute). The log holds the calls made and the slots booked; taking a
slot is one atomic operation (one Lua script in Redis), so no two workers can take the
last slot, and a call that would break any quota takes none. A per-day quota is a
fixed-window counter.

`safety` (1 by default) is the share of each quota the workers use: below 1 the window
is stretched (N calls in any minute / safety), so the rate is exactly safety × N and no
fraction is rounded away. `margin_s` stretches the window a little more, for the time a
call takes to reach the upstream and clocks that differ: two calls recorded a minute
apart must not arrive less than a minute apart.

A slot is a time at which one call may go. `take()` asks for one now. A request that
will wait for a model whose quota has no headroom `book()`s the earliest free slot in
the future instead, first come first served across every worker: the slot enters the
log, so the next request books the next free one, and a request that sees its slot lies
beyond its patience books nothing. The booking is kept under the request's id; its next
step calls in that slot (`take()` with the same holder). A booking given up (a
downgrade, a cancel) is `release()`d: it leaves the log, and its slot is free for the
next caller. A booked slot is recorded in the log at the time the call really goes: a
holder a little late (the scheduler and the queue are not punctual) checks its call
against the calls already made and, if it no longer fits, its booking moves to the
earliest time that does (later holders move on in turn); a booking not used within
`late_s` is void.
"""

import bisect
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from generator.resilience.clock import Clock
from generator.resilience.stores import MemoryStore, Script, Store

EPS = 1e-6  # seconds: sums of float times must not lose a slot


@dataclass(frozen=True)
class LimiterConfig:
    safety: float = 1.0  # the share of each catalogue quota the workers may use
    minute_s: float = 60.0  # the length of a "per minute" quota
    day_s: float = 86400.0  # the length of a "per day" quota (shorter in scaled drills)
    day_zone: str = "America/Los_Angeles"  # Google resets daily quotas at Pacific midnight
    late_s: float = 10.0  # how late a booked slot may still be used
    # Added to the window: transit time and clock differences (real seconds, not scaled).
    margin_s: float = 0.25
    # A limit learned from per-minute 429s (Limiter.learn) holds for `recover_s` without
    # a 429, then grows by a step a minute back to the catalogue's; each 429 met while
    # it grows doubles that quiet period, up to `learn_s`, which is also how long a
    # quota the upstream states in its 429 (quotaValue) is kept to before growing.
    learn_s: float = 3600.0
    recover_s: float = 300.0

    def __post_init__(self):
        if not 0 < self.safety <= 1:
            raise ValueError("the safety factor must be in (0, 1]")
        if self.minute_s <= 0 or self.day_s <= 0:
            raise ValueError("quota periods must be positive")
        if self.late_s < 0:
            raise ValueError("the lateness allowed for a booked slot must not be negative")
        if self.margin_s < 0:
            raise ValueError("the margin of the quota window must not be negative")
        if self.learn_s <= 0 or self.recover_s <= 0:
            raise ValueError("a learned limit must be kept for a positive time")

    @property
    def window_s(self) -> float:
        """The sliding window in which at most N calls go."""
        return self.minute_s / self.safety + self.margin_s


@dataclass(frozen=True)
class Quotas:
    """A model's upstream quotas (None: unknown or unlimited)."""

    rpm: int | None = None
    ipm: int | None = None
    rpd: int | None = None

    @property
    def per_window(self) -> int:
        """Calls in any window (0: no per-minute quota): every call counts against both."""
        limits = [q for q in (self.rpm, self.ipm) if q]
        return min(limits) if limits else 0


@dataclass(frozen=True)
class Counter:
    """A fixed-window count (a per-day quota): at most `limit` until `reset_at`. Its key
    holds the count."""

    key: str
    limit: int
    reset_at: float


# --- the shared state: the Lua script with its in-memory twin ----------------------------
#
# The log: a sorted set of calls made ("c:<n>", scored by when) and slots booked
# ("b:<holder>", scored by the slot). KEYS: the log, its sequence, then the per-day
# counters. ARGV: mode, now, holder, not_after, not_before, late_s, window_s, N (calls
# per window, 0: none), then (limit, reset_at) per counter. A time fits the log if no
# run of N + 1 entries with it spans less than the window. Modes:
#   take     a call now: the holder's own booking if it is due and the call still fits
#            the calls made (if not, the booking moves to the earliest time that does:
#            {0, that time}), else a new slot if one fits now. {1, now} or {0, when}
#   book     the holder's booking, or the earliest free slot if it is not after
#            not_after (then booked). {1, slot} or {0, the earliest slot}
#   peek     {1 if a slot is free now else 0, the earliest slot, the holder's booking
#            or -1}; changes nothing
#   release  drop the holder's booking (the day's count gives it back)
# A slot is never earlier than not_before (a 429 from the upstream holds every caller
# back until then).
_SLOT_LUA = """
local mode, now, holder = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local not_after, not_before, late = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local window, n = tonumber(ARGV[7]), tonumber(ARGV[8])
local log, seq = KEYS[1], KEYS[2]
local eps = 1e-6
local me = holder ~= '' and ('b:' .. holder) or ''
local function s(x) return string.format('%.17g', x) end

-- Calls no window from now on can hold are forgotten; bookings past late_s are void.
redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. s(now - math.max(window, late)))
for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, '-inf', '(' .. s(now - late))) do
  if string.sub(m, 1, 2) == 'b:' then redis.call('ZREM', log, m) end
end
local own = me ~= '' and tonumber(redis.call('ZSCORE', log, me)) or nil

local function entries(upto)  -- the times in the log up to `upto`, but the holder's
  local raw = redis.call('ZRANGEBYSCORE', log, '-inf', upto == math.huge and '+inf' or s(upto), 'WITHSCORES')
  local times = {}
  for i = 1, #raw, 2 do
    if raw[i] ~= me then times[#times + 1] = tonumber(raw[i + 1]) end
  end
  return times
end

local function fits(times, t)
  if n <= 0 then return true end
  local p = 1
  while p <= #times and times[p] <= t do p = p + 1 end
  local function at(i)
    if i < p then return times[i] elseif i == p then return t else return times[i - 1] end
  end
  for k = math.max(1, p - n), math.min(p, #times + 1 - n) do
    if at(k + n) - at(k) < window - eps then return false end
  end
  return true
end

local function earliest(times, from)
  if fits(times, from) then return from end
  for i = 1, #times do
    local c = times[i] + window
    if c > from and fits(times, c) then return c end
  end
  return from
end

local function day_floor(from)
  for j = 3, #KEYS do
    local limit, reset_at = tonumber(ARGV[7 + 2 * (j - 2)]), tonumber(ARGV[8 + 2 * (j - 2)])
    if tonumber(redis.call('GET', KEYS[j]) or 0) >= limit then from = math.max(from, reset_at) end
  end
  return from
end

local function count_day(delta)
  for j = 3, #KEYS do
    local reset_at = tonumber(ARGV[8 + 2 * (j - 2)])
    local c = tonumber(redis.call('GET', KEYS[j]) or 0) + delta
    if c < 0 then c = 0 end
    redis.call('SET', KEYS[j], c, 'PX', math.ceil((reset_at - now + 60) * 1000))
  end
end

local function keep()
  local last = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if #last > 0 then
    redis.call('PEXPIRE', log, math.ceil((tonumber(last[2]) - now + window + late + 60) * 1000))
  end
end

local function record_call()  -- every call, for what a 429 may teach (Limiter.learn)
  redis.call('ZADD', log, s(now), 'c:' .. redis.call('INCR', seq))
  redis.call('PEXPIRE', seq, math.ceil((window + 60) * 1000))
  keep()
end

if mode == 'release' then
  if not own then return {0, '-1'} end
  redis.call('ZREM', log, me)
  count_day(-1)
  return {1, s(own)}
end
if own and mode == 'book' then return {1, s(own)} end
if own and mode == 'take' then
  if own > now + eps then return {0, s(own)} end
  -- Due: the call goes now if it fits the calls made and the slots due by now.
  local past = entries(now + eps)
  local at = earliest(past, math.max(now, not_before))
  if at <= now + eps then
    redis.call('ZREM', log, me)
    record_call()
    return {1, s(now)}
  end
  redis.call('ZADD', log, s(at), me)
  keep()
  return {0, s(at)}
end

local times = entries(math.huge)
local from = day_floor(math.max(now, not_before))
local slot = earliest(times, from)
if mode == 'peek' then
  return {slot <= now + eps and 1 or 0, s(slot), own and s(own) or '-1'}
end
if mode == 'take' then
  if slot > now + eps then return {0, s(slot)} end
  record_call()
  count_day(1)
  return {1, s(now)}
end
if slot > not_after then return {0, s(slot)} end
redis.call('ZADD', log, s(slot), me)
keep()
count_day(1)
return {1, s(slot)}
"""


def _fits(times: list[float], t: float, window: float, n: int) -> bool:
    """Whether a call at `t` keeps every run of n + 1 entries at least a window long."""
    if n <= 0:
        return True
    p = bisect.bisect_right(times, t)
    merged = [*times[:p], t, *times[p:]]
    # 0-based: t sits at p; the runs that hold it start at p - n .. p.
    for k in range(max(0, p - n), min(p, len(merged) - 1 - n) + 1):
        if merged[k + n] - merged[k] < window - EPS:
            return False
    return True


def _earliest(times: list[float], start: float, window: float, n: int) -> float:
    if _fits(times, start, window, n):
        return start
    for e in times:
        c = e + window
        if c > start and _fits(times, c, window, n):
            return c
    return start


def _slot_twin(db: MemoryStore, keys, args):
    mode, now, holder = args[0], float(args[1]), args[2]
    not_after, not_before, late = float(args[3]), float(args[4]), float(args[5])
    window, n = float(args[6]), int(args[7])
    log_key, seq_key = keys[0], keys[1]
    counters = [
        (keys[j], int(args[8 + 2 * (j - 2)]), float(args[9 + 2 * (j - 2)]))
        for j in range(2, len(keys))
    ]
    me = f"b:{holder}" if holder else ""
    log = {
        m: t
        for m, t in db.get(log_key, now, {}).items()
        if t >= now - max(window, late) and not (m.startswith("b:") and t < now - late)
    }
    db.set(log_key, log)
    own = log.get(me) if me else None

    def entries(upto: float) -> list[float]:
        return sorted(t for m, t in log.items() if m != me and t <= upto)

    def count_day(delta: int) -> None:
        for key, _, reset_at in counters:
            db.set(key, max(0, db.get(key, now, 0) + delta), reset_at + 60)

    def record_call() -> None:  # every call, for what a 429 may teach (Limiter.learn)
        number = db.get(seq_key, now, 0) + 1
        db.set(seq_key, number)
        log[f"c:{number}"] = now

    if mode == "release":
        if own is None:
            return [0, "-1"]
        del log[me]
        count_day(-1)
        return [1, repr(own)]
    if own is not None and mode == "book":
        return [1, repr(own)]
    if own is not None and mode == "take":
        if own > now + EPS:
            return [0, repr(own)]
        at = _earliest(entries(now + EPS), max(now, not_before), window, n)
        if at <= now + EPS:
            del log[me]
            record_call()
            return [1, repr(now)]
        log[me] = at
        return [0, repr(at)]

    start = max(now, not_before)
    for key, limit, reset_at in counters:
        if db.get(key, now, 0) >= limit:
            start = max(start, reset_at)
    slot = _earliest(entries(math.inf), start, window, n)
    if mode == "peek":
        return [1 if slot <= now + EPS else 0, repr(slot), "-1" if own is None else repr(own)]
    if mode == "take":
        if slot > now + EPS:
            return [0, repr(slot)]
        record_call()
        count_day(1)
        return [1, repr(now)]
    if slot > not_after:
        return [0, repr(slot)]
    log[me] = slot
    count_day(1)
    return [1, repr(slot)]


# KEYS: the log, then the counters. ARGV: now, window. The calls made in the last window
# and the counts.
_READ_LUA = """
local since = string.format('(%.17g', tonumber(ARGV[1]) - tonumber(ARGV[2]))
local made = redis.call('ZCOUNT', KEYS[1], since, ARGV[1])
local result = {made}
for j = 2, #KEYS do result[#result + 1] = redis.call('GET', KEYS[j]) end
return result
"""


def _read_twin(db: MemoryStore, keys, args):
    now, window = float(args[0]), float(args[1])
    log = db.get(keys[0], now, {})
    made = sum(1 for t in log.values() if now - window < t <= now)
    return [made] + [None if db.get(k, now) is None else str(db.get(k, now)) for k in keys[1:]]


# The limit learned from per-minute 429s, kept under one key as "limit:at:quiet:before":
# the limit the last 429 set, when it came, how long that limit holds before it grows
# again, and the limit before the burst of 429s it belongs to. 429s with no call taken
# between them answer calls that were in flight together: one burst, which takes the
# limit down to at most half of what it was before it (multiplicative decrease), never
# below one call a window. Once the quiet period is over, the limit grows by a step a
# minute (additive increase: a twentieth of the catalogue's quota, at least one call)
# back to the catalogue's; a 429 met while it grows doubles the quiet period, up to
# `learn_s`. The times of the 429s of the last window are kept beside it.
#
# KEYS: the log, the learned limit, the 429s. ARGV: now, window, the catalogue's calls a
# window (0: none), the quota the 429 states (0: none), minute, learn_s, recover_s.
# Returns the new limit.
_LEARN_LUA = """
local now, window, base = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local told, minute = tonumber(ARGV[4]), tonumber(ARGV[5])
local keep, recover = tonumber(ARGV[6]), tonumber(ARGV[7])
local function s(x) return string.format('%.17g', x) end
local function calls_after(t)
  local n = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. s(t), ARGV[1])) do
    if string.sub(m, 1, 2) == 'c:' then n = n + 1 end
  end
  return n
end
local made = calls_after(now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', s(now - window))
redis.call('ZADD', KEYS[3], s(now), 'r:' .. redis.call('ZCARD', KEYS[3]) .. ':' .. s(now))
redis.call('PEXPIRE', KEYS[3], math.ceil(window * 1000))
local refused = redis.call('ZCARD', KEYS[3])
local value, at, quiet, before = 0, 0, 0, 0
local raw = redis.call('GET', KEYS[2])
if raw then
  local f = {}
  for part in string.gmatch(raw, '[^:]+') do f[#f + 1] = tonumber(part) end
  if #f == 4 then value, at, quiet, before = f[1], f[2], f[3], f[4] end  -- else: older
end
local step = math.max(1, math.ceil(base / 20))
local current = base
if value > 0 then
  current = value
  if now >= at + quiet then
    current = value + step * (1 + math.floor((now - at - quiet) / minute))
  end
  if base > 0 and current >= base then current = base end
end
local probing = value > 0 and current > value
if current <= 0 then current = made end
if told > 0 and told < current then current = told end
if value <= 0 or calls_after(at) > 0 then before = current end
local learned
if told > 0 and made > told then
  learned, quiet = current, keep
else
  local floor = math.max(1, math.ceil(before / 2))
  learned = math.min(current, math.max(floor, math.min(current - 1, made - refused)))
  if probing then quiet = math.min(2 * quiet, keep) else quiet = recover end
end
learned = math.max(1, learned)
local ttl = quiet + keep
if base > 0 then ttl = quiet + (math.ceil((base - learned) / step) + 1) * minute + window end
local state = string.format('%d:%s:%s:%d', learned, s(now), s(quiet), before)
redis.call('SET', KEYS[2], state, 'PX', math.ceil(ttl * 1000))
return learned
"""


def _state(raw) -> tuple[int, float, float, int]:
    """(limit, at, quiet, before) of a learned limit; zeros: none (or the "limit:until"
    an older version kept, which is dropped)."""
    fields = [] if raw is None else str(raw).split(":")
    if len(fields) != 4:
        return 0, 0.0, 0.0, 0
    value, at, quiet, before = fields
    return int(value), float(at), float(quiet), int(before)


def _step(base: int) -> int:
    return max(1, math.ceil(base / 20))


def _effective(raw, now: float, base: int, minute: float) -> int:
    """The calls a window the workers keep to (0: no limit): the learned limit, grown by
    a step a minute once its quiet period is over, up to `base`, the catalogue's."""
    value, at, quiet, _ = _state(raw)
    if value <= 0:
        return base
    if now >= at + quiet:
        value += _step(base) * (1 + math.floor((now - at - quiet) / minute))
    return base if base and value >= base else value


def learn_step(raw, now, made, refused, burst, base, told, window, minute, keep_s, recover_s):
    """What one per-minute 429 teaches (the _LEARN_LUA script's twin): (the new limit,
    the state to keep, for how many seconds). `made`: our calls in the window of the
    refused one; `refused`: the 429s in it, this one included; `burst`: no call was
    taken since the last 429; `told`: the quota the 429 states (0: none)."""
    value, _, quiet, before = _state(raw)
    current = _effective(raw, now, base, minute)
    probing = 0 < value < current
    if current <= 0:
        current = made  # no quota known: as many as went through
    if 0 < told < current:
        current = told
    if value <= 0 or not burst:
        before = current
    if told > 0 and made > told:
        # The upstream states its quota and we went past it: that explains the 429.
        learned, quiet = current, keep_s
    else:
        # Not explained: a quota smaller than we know, or other clients of the project.
        # The upstream let through the calls of the window but the refused ones.
        floor = max(1, math.ceil(before / 2))
        learned = min(current, max(floor, min(current - 1, made - refused)))
        quiet = min(2 * quiet, keep_s) if probing else recover_s
    learned = max(1, learned)
    ttl = quiet + keep_s
    if base > 0:
        ttl = quiet + (math.ceil((base - learned) / _step(base)) + 1) * minute + window
    return learned, f"{learned}:{now!r}:{quiet!r}:{before}", ttl


def _learn_twin(db: MemoryStore, keys, args):
    now, window, base, told = float(args[0]), float(args[1]), int(args[2]), int(args[3])
    minute, keep_s, recover_s = float(args[4]), float(args[5]), float(args[6])
    log = db.get(keys[0], now, {})

    def calls_after(t: float) -> int:
        return sum(1 for m, c in log.items() if m.startswith("c:") and t < c <= now)

    refusals = [r for r in db.get(keys[2], now, []) if r > now - window] + [now]
    db.set(keys[2], refusals, now + math.ceil(window * 1000) / 1000)
    raw = db.get(keys[1], now)
    burst = raw is not None and calls_after(_state(raw)[1]) == 0
    learned, state, ttl = learn_step(
        raw, now, calls_after(now - window), len(refusals), burst, base, told, window,
        minute, keep_s, recover_s,
    )  # fmt: skip
    db.set(keys[1], state, now + math.ceil(ttl * 1000) / 1000)
    return learned


def _get_twin(db: MemoryStore, keys, args):
    return db.get(keys[0], float(args[0]))


SLOT = Script(_SLOT_LUA, _slot_twin)
READ = Script(_READ_LUA, _read_twin)
LEARN = Script(_LEARN_LUA, _learn_twin)
GET = Script("return redis.call('GET', KEYS[1])", _get_twin)


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

    def _counters(self, model: str, quotas: Quotas, now: float) -> list[Counter]:
        if not quotas.rpd:
            return []
        day, reset = self.day_window(now)
        n = max(1, math.floor(self.rate(quotas.rpd)))
        return [Counter(f"limit:{model}:rpd:{day}", n, reset)]

    def per_window(self, model: str, quotas: Quotas) -> int:
        """The calls in any window the workers keep to: the catalogue's, or fewer if the
        upstream's 429s taught so (0: no limit)."""
        now = self.clock.now()
        return self.per_window_from(quotas, self.store.do(self.per_window_op(model, now)), now)

    # For Store.batch() (Health.snapshot()): what per_window() and _slot() run in the
    # store, as operations, and how their answers read.

    def per_window_op(self, model: str, now: float) -> tuple:
        return ("run", GET, [f"limit:{model}:learned"], [repr(now)])

    def per_window_from(self, quotas: Quotas, raw, now: float) -> int:
        if not _state(raw)[0]:
            return quotas.per_window
        return _effective(raw, now, quotas.per_window, self.config.minute_s) or quotas.per_window

    def _learned(self, model: str, quotas: Quotas) -> int:
        """The limit the 429s taught, grown back so far (0: none is kept)."""
        now = self.clock.now()
        raw = self.store.run(GET, [f"limit:{model}:learned"], [repr(now)])
        if not _state(raw)[0]:
            return 0
        return _effective(raw, now, quotas.per_window, self.config.minute_s)

    def learn(self, model: str, quotas: Quotas, told: int | None = None) -> int:
        """A per-minute 429 came back although the log admitted the call: the upstream
        (or other clients of the project) leaves fewer calls a window than the log
        allowed. `told`: the quota the 429 states (Google's quotaValue), if any.

        A 429 past a stated quota keeps to that quota for `learn_s`. Otherwise the
        limit comes down to the calls of ours the upstream let through in the window,
        but a burst of 429s (a window from its first) takes at most half the limit
        before it: a 429 from another client in a quiet minute costs half the quota for
        a while, not all of it, and a quota half or a quarter of the catalogue's is
        found in one or two bursts. After `recover_s` without a 429 the limit grows by
        a step a minute back to the catalogue's; a 429 while it grows doubles that
        quiet period, up to `learn_s`. Returns the new limit."""
        now = self.clock.now()
        keys = [f"limit:{model}:log", f"limit:{model}:learned", f"limit:{model}:refused"]
        c = self.config
        args = [repr(now), repr(c.window_s), quotas.per_window, int(told or 0)]
        args += [repr(c.minute_s), repr(c.learn_s), repr(c.recover_s)]
        return int(self.store.run(LEARN, keys, args))

    def _slot(self, mode, model, quotas, holder="", not_after=0.0, not_before=None, n=None):
        return self.store.run(
            *self.slot_op(mode, model, quotas, holder, not_after, not_before, n)[1:]
        )

    def slot_op(self, mode, model, quotas, holder="", not_after=0.0, not_before=None, n=None):
        """The SLOT script's run; `n`: per_window() if already read (None: read it now)."""
        now = self.clock.now()
        counters = self._counters(model, quotas, now)
        keys = [f"limit:{model}:log", f"limit:{model}:seq"] + [c.key for c in counters]
        args: list = [mode, repr(now), holder, repr(not_after), repr(not_before or now)]
        if n is None:
            n = self.per_window(model, quotas)
        args += [repr(self.config.late_s), repr(self.config.window_s), n]
        for c in counters:
            args += [c.limit, repr(c.reset_at)]
        return ("run", SLOT, keys, args)

    def take(
        self, model: str, quotas: Quotas, holder: str = "", not_before: float | None = None
    ) -> tuple[bool, float | None]:
        """A slot for a call to `model` now: `holder`'s booking if it is due (and the
        call still fits the calls made), else one free now in every quota of the model.
        Refused: the time one would be (for a holder, its booking moves there)."""
        return self.take_from(self._slot("take", model, quotas, holder, not_before=not_before))

    @staticmethod
    def take_from(raw) -> tuple[bool, float | None]:
        granted, slot = raw
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

    def release(self, model: str, holder: str, quotas: Quotas | None = None) -> float | None:
        """Give `holder`'s booking back (its slot is free for others, and with `quotas`
        its count in the day's quota too); the slot or None."""
        # n=0: a release counts no window (it skips reading what the 429s taught).
        released, slot = self._slot("release", model, quotas or Quotas(), holder, n=0)
        return float(slot) if released else None

    def peek(
        self, model: str, quotas: Quotas, holder: str = "", not_before: float | None = None
    ) -> tuple[float | None, float | None]:
        """(when a new slot would be free, None: now; `holder`'s booking or None),
        without changing anything."""
        return self.peek_from(self._slot("peek", model, quotas, holder, not_before=not_before))

    @staticmethod
    def peek_from(raw) -> tuple[float | None, float | None]:
        free, slot, own = raw
        return (None if free else float(slot)), (None if own == "-1" else float(own))

    def next_free_at(self, model: str, quotas: Quotas) -> float | None:
        """When a slot would be free (None: now), without taking one."""
        return self.peek(model, quotas)[0]

    def usage(self, model: str, quotas: Quotas) -> dict:
        """{"rpm": {"used": n, "limit": 20}, ...}: the calls made in the last minute
        against each quota as the workers keep to it (per minute: safety × the quota,
        fractional)."""
        now = self.clock.now()
        counters = self._counters(model, quotas, now)
        keys = [f"limit:{model}:log"] + [c.key for c in counters]
        values = self.store.run(READ, keys, [repr(now), repr(self.config.minute_s)])
        result = {}
        learned = self._learned(model, quotas)
        for name, limit in (("rpm", quotas.rpm), ("ipm", quotas.ipm)):
            if limit:
                rate = self.rate(min(limit, learned) if learned else limit)
                result[name] = {
                    "used": int(values[0]),
                    "limit": int(rate) if rate.is_integer() else round(rate, 2),
                }
        for counter, value in zip(counters, values[1:], strict=True):
            result["rpd"] = {"used": int(value or 0), "limit": counter.limit}
        return result
