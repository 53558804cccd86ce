"""A circuit breaker per model, shared by every worker through a Store.

It opens on the failure *rate* over the last `window` calls once at least `min_calls`
were made, not on consecutive failures: at peak Pro fails ~45 % of calls, and a
consecutive-failure breaker would flap open and shut all day although retrying works.
An open breaker lets exactly one probe call through after its open time (a lease with
an expiry, so a probe whose worker died does not block the model forever); the probe's
success closes it, its failure opens it again for longer. Open durations double while
the model keeps failing soon after closing: a provider-wide outage lasts 30-120 min,
and probing it every minute for two hours wastes calls and time.

Pure apart from the store: the benchmark runs it on a virtual clock.
"""

import json
import logging
import math
from dataclasses import dataclass

from generator.resilience.clock import Clock
from generator.resilience.stores import MemoryStore, Script, Store
from generator.resilience.taxonomy import Outcome

log = logging.getLogger("steadyshot.breaker")

# What says "the model is in trouble". Not blocked, bad_request or rate_limited: those are
# about the prompt or our quota, and a breaker opened on them would hide a healthy model.
FAILURES = frozenset(
    {
        Outcome.OVERLOADED,
        Outcome.UNAVAILABLE,
        Outcome.SERVER_ERROR,
        Outcome.TIMEOUT,
        Outcome.NETWORK,
    }
)
TRANSITIONS_KEY = "breaker:transitions"


def kind_of(outcome: Outcome) -> str:
    if outcome == Outcome.SUCCESS:
        return "success"
    return "failure" if outcome in FAILURES else "neutral"


@dataclass(frozen=True)
class BreakerConfig:
    window: int = 20  # the last N calls of a model that count
    min_calls: int = 8  # no verdict on fewer calls than this
    failure_rate: float = 0.6  # opens at or above this share of failures in the window
    open_s: float = 60.0  # first open duration
    open_max_s: float = 1800.0  # open durations grow up to this
    multiplier: float = 2.0
    # A breaker that opens again within this long after closing opens for longer.
    cooldown_s: float = 600.0
    probe_lease_s: float = 200.0  # the single half-open probe (longer than any call)
    transitions_kept: int = 200

    def __post_init__(self):
        if not 0 < self.failure_rate <= 1:
            raise ValueError("the failure rate must be in (0, 1]")
        if not 1 <= self.min_calls <= self.window:
            raise ValueError("the minimum number of calls must be between 1 and the window")
        if self.open_s <= 0 or self.open_max_s < self.open_s or self.multiplier < 1:
            raise ValueError("open durations must be positive and grow up to the maximum")
        if self.probe_lease_s <= 0:
            raise ValueError("the probe lease must be positive")

    def open_duration(self, level: int) -> float:
        return min(self.open_max_s, self.open_s * self.multiplier**level)


@dataclass(frozen=True)
class BreakerState:
    state: str  # "closed" | "open" | "half_open"
    open_until: float | None
    failures: int
    calls: int
    probe_available: bool

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


# --- the shared state: each Lua script with its in-memory twin --------------------------
#
# Keys: the state hash (state, level, open_until, closed_at), the window of the last
# calls (1 failure, 0 success, newest first) and the probe lease (the token of the one
# caller let through an open breaker, expiring on its own if that caller dies).

_DURATION = """
local function duration(level)
  local d = tonumber(ARGV[4]) * tonumber(ARGV[6]) ^ level
  local cap = tonumber(ARGV[5])
  if d > cap then d = cap end
  return d
end
"""

# KEYS: state, window, probe. ARGV: now, kind, token, open_s, open_max_s, multiplier,
# window, min_calls, failure_rate, cooldown_s. Returns the transition
# {from, to, reason, open_until or -1} or nil.
_RECORD_LUA = (
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


def _record_twin(db: MemoryStore, keys, args):
    state_key, window_key, probe_key = keys
    now, kind, token = float(args[0]), args[1], args[2]
    open_s, open_max_s, multiplier = float(args[3]), float(args[4]), float(args[5])
    size, min_calls, failure_rate, cooldown_s = (
        int(args[6]),
        int(args[7]),
        float(args[8]),
        float(args[9]),
    )
    fields = db.get(state_key, now, {})
    state = fields.get("state", "closed")
    level = fields.get("level", 0)

    def duration(level):
        return min(open_max_s, open_s * multiplier**level)

    if state == "closed":
        if kind == "neutral":
            return None
        window = [1 if kind == "failure" else 0, *db.get(window_key, now, [])][:size]
        db.set(window_key, window)
        failures, calls = sum(window), len(window)
        if calls >= min_calls and failures / calls >= failure_rate:
            closed_at = fields.get("closed_at")
            level = 0 if closed_at is None or now - closed_at >= cooldown_s else level + 1
            until = now + duration(level)
            db.set(state_key, {**fields, "state": "open", "open_until": until, "level": level})
            db.delete(window_key)
            reason = f"{failures} of the last {calls} calls failed"
            return ["closed", "open", reason, repr(until)]
        return None
    if token == "" or db.get(probe_key, now) != token:
        return None
    db.delete(probe_key)
    if kind == "success":
        fields = {k: v for k, v in fields.items() if k != "open_until"}
        db.set(state_key, {**fields, "state": "closed", "closed_at": now})
        db.delete(window_key)
        return [state, "closed", "the probe call succeeded", "-1"]
    if kind == "failure":
        until = now + duration(level + 1)
        db.set(state_key, {**fields, "state": "open", "open_until": until, "level": level + 1})
        return [state, "open", "the probe call failed", repr(until)]
    return None


# KEYS: state, probe. ARGV: now, token, lease_ms. Returns {admitted, retry_at or -1} and,
# when a probe is let through an open breaker, the transition {from, to, reason}.
_ADMIT_LUA = """
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


def _admit_twin(db: MemoryStore, keys, args):
    state_key, probe_key = keys
    now, token, lease_ms = float(args[0]), args[1], int(args[2])
    fields = db.get(state_key, now, {})
    state = fields.get("state", "closed")
    if state == "closed":
        return [1, "-1"]
    until = fields.get("open_until", 0)
    if now < until:
        return [0, repr(until)]
    if db.get(probe_key, now) is None:
        db.set(probe_key, token, now + lease_ms / 1000)
        db.set(state_key, {**fields, "state": "half_open"})
        if state == "open":
            return [1, "-1", "open", "half_open", "a probe call is let through"]
        return [1, "-1"]
    return [0, repr(db.expires_at(probe_key))]


# KEYS: probe. ARGV: token.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""


def _release_twin(db: MemoryStore, keys, args):
    # No clock here: a lease that has expired but not been swept is deleted all the same.
    if db.get(keys[0], -math.inf) == args[0]:
        db.delete(keys[0])


# KEYS: state, window, probe. Returns {state, open_until or '', probe ttl ms, window}.
_READ_LUA = """
local fields = redis.call('HMGET', KEYS[1], 'state', 'open_until')
return {fields[1] or 'closed', fields[2] or '', redis.call('PTTL', KEYS[3]),
        redis.call('LRANGE', KEYS[2], 0, -1)}
"""


def _read_twin(db: MemoryStore, keys, args):
    state_key, window_key, probe_key = keys
    now = float(args[0])
    fields = db.get(state_key, now, {})
    held = db.get(probe_key, now) is not None
    ttl = round((db.expires_at(probe_key) - now) * 1000) if held else -2
    until = fields.get("open_until")
    return [
        fields.get("state", "closed"),
        "" if until is None else repr(until),
        ttl,
        [str(v) for v in db.get(window_key, now, [])],
    ]


RECORD = Script(_RECORD_LUA, _record_twin)
ADMIT = Script(_ADMIT_LUA, _admit_twin)
RELEASE = Script(_RELEASE_LUA, _release_twin)
READ = Script(_READ_LUA, _read_twin)


def _transition(raw) -> dict | None:
    if not raw:
        return None
    frm, to, reason, until = (str(x) for x in raw)
    until_f = float(until)
    return {
        "from": frm,
        "to": to,
        "reason": reason,
        "open_until": None if until_f < 0 else until_f,
    }


class Breaker:
    def __init__(self, store: Store, clock: Clock, config: BreakerConfig):
        self.store = store
        self.clock = clock
        self.config = config

    @staticmethod
    def _keys(model: str) -> tuple[str, str, str]:
        return f"breaker:{model}", f"breaker:{model}:window", f"breaker:{model}:probe"

    def admit(self, model: str, token: str) -> tuple[bool, float | None]:
        """May a call go to `model` now? Past its open time, one caller (holding the
        probe lease `token`) is let through."""
        now = self.clock.now()
        state, _, probe = self._keys(model)
        lease_ms = max(1, int(self.config.probe_lease_s * 1000))
        raw = self.store.run(ADMIT, [state, probe], [repr(now), token, lease_ms])
        if len(raw) > 2:
            self._log(model, _transition([*raw[2:5], "-1"]), now)
        retry_at = float(raw[1])
        return bool(raw[0]), (None if retry_at < 0 else retry_at)

    def release(self, model: str, token: str) -> None:
        self.store.run(RELEASE, [self._keys(model)[2]], [token])

    def record(self, model: str, outcome: Outcome, token: str = "") -> dict | None:
        now = self.clock.now()
        c = self.config
        args = [repr(now), kind_of(outcome), token, c.open_s, c.open_max_s, c.multiplier]
        args += [c.window, c.min_calls, c.failure_rate, c.cooldown_s]
        transition = _transition(self.store.run(RECORD, list(self._keys(model)), args))
        if transition:
            self._log(model, transition, now)
        return transition

    def state(self, model: str) -> BreakerState:
        now = self.clock.now()
        state, until, ttl, window = self.store.run(READ, list(self._keys(model)), [repr(now)])
        open_until = float(until) if until else None
        probe_until = now + ttl / 1000 if ttl and ttl > 0 else None
        probe_available = (
            state != "closed"
            and open_until is not None
            and now >= open_until
            and probe_until is None
        )
        if state != "closed" and probe_until is not None:
            # Half-open with its probe in flight: nobody else gets in before the lease ends.
            open_until = max(open_until or now, probe_until)
        window = [int(v) for v in window]
        return BreakerState(
            state=state,
            open_until=open_until if state != "closed" else None,
            failures=sum(window),
            calls=len(window),
            probe_available=probe_available,
        )

    def transitions(self, limit: int = 50) -> list[dict]:
        return [json.loads(x) for x in self.store.newest(TRANSITIONS_KEY, limit)]

    def _log(self, model: str, transition: dict, now: float) -> None:
        entry = {"at": now, "model": model, "from": transition["from"], "to": transition["to"]}
        entry["reason"] = transition["reason"]
        self.store.push_capped(TRANSITIONS_KEY, json.dumps(entry), self.config.transitions_kept)
        until = transition.get("open_until")
        log.warning(
            "model=%s breaker %s -> %s: %s%s",
            model,
            transition["from"],
            transition["to"],
            transition["reason"],
            f" (open for {until - now:.0f} s)" if until else "",
        )
