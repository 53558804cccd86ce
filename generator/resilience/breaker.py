"""A circuit breaker per model, shared by every worker through a Store. It means "dead":
open when calls to the model are almost surely wasted (an outage), not when it is
merely struggling.

A model that fails half its calls, or nine in ten, is alive: retrying it delivers, and
how well it does (its success rate and latencies, Health.snapshot()) goes into the
policy's decisions instead of a wall. So the breaker opens only after `dead_after`
counted calls *in a row* failed. At a 10 % success rate, 40 failures in a row start at
about one call in 700 (0.1 × 0.9⁴⁰); a dead model gets there within a minute or two of
traffic. (At 30, the simulator's hard episode, 90 % of calls failing, saw Pro called
dead once or twice an hour, each time for minutes: docs/benchmarks.md.)

Open, it lets one probe call through at a time (a lease with an expiry, so a probe whose
worker died does not block the model), the first `probe_s` after opening and then at an
interval that grows while probes keep failing, up to `probe_max_s`: a model that comes
back is found within that much plus one call, not after a doubling of 30 minutes. A
probe's success closes the breaker; results of calls let through before it opened are
ignored.

Pure apart from the store: the benchmark runs it on a virtual clock.
"""

import json
import logging
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
    window: int = 20  # the last N counted calls of a model, for its success rate
    dead_after: int = 40  # this many counted calls in a row failed: the model is dead
    probe_s: float = 10.0  # the first probe this long after opening
    probe_max_s: float = 30.0  # probes while it stays dead, at most this far apart
    probe_lease_s: float = 200.0  # the probe in flight (longer than any call)
    transitions_kept: int = 200

    def __post_init__(self):
        if self.window < 1 or self.dead_after < 1:
            raise ValueError("the window and the failures in a row must be at least 1")
        if self.probe_s <= 0 or self.probe_max_s < self.probe_s:
            raise ValueError("probe intervals must be positive and grow up to the maximum")
        if self.probe_lease_s <= 0:
            raise ValueError("the probe lease must be positive")


@dataclass(frozen=True)
class BreakerState:
    state: str  # "closed" | "open" | "half_open" (a probe in flight)
    open_until: float | None  # when the next probe may go (None: closed)
    failures: int  # in the window
    calls: int  # in the window
    probe_available: bool
    streak: int = 0  # counted calls in a row that failed

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


# --- the shared state: each Lua script with its in-memory twin --------------------------
#
# Keys: the state hash (state, streak, next_probe, interval), the window of the last
# counted calls (1 failure, 0 success, newest first) and the probe lease (the token of
# the one caller let through an open breaker, expiring on its own if that caller dies).

# KEYS: state, window, probe. ARGV: now, kind, token, window, dead_after, probe_s,
# probe_max_s. Returns the transition {from, to, reason, next probe or -1} or nil.
_RECORD_LUA = """
local now, kind, token = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if kind == 'neutral' then
  if token ~= '' and redis.call('GET', KEYS[3]) == token then redis.call('DEL', KEYS[3]) end
  return nil
end
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state ~= 'closed' then
  -- Open: only the probe's result counts; calls let through before are ignored.
  if token == '' or redis.call('GET', KEYS[3]) ~= token then return nil end
  redis.call('DEL', KEYS[3])
end
redis.call('LPUSH', KEYS[2], kind == 'failure' and 1 or 0)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
if state == 'closed' then
  if kind == 'success' then
    redis.call('HSET', KEYS[1], 'streak', 0)
    return nil
  end
  local streak = redis.call('HINCRBY', KEYS[1], 'streak', 1)
  if streak < tonumber(ARGV[5]) then return nil end
  local probe_at = now + tonumber(ARGV[6])
  redis.call('HSET', KEYS[1], 'state', 'open', 'next_probe', tostring(probe_at),
             'interval', ARGV[6])
  return {'closed', 'open', streak .. ' calls in a row failed', tostring(probe_at)}
end
if kind == 'success' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'streak', 0)
  redis.call('HDEL', KEYS[1], 'next_probe', 'interval')
  return {state, 'closed', 'a probe call succeeded', '-1'}
end
local interval = math.min(tonumber(redis.call('HGET', KEYS[1], 'interval')) * 2,
                          tonumber(ARGV[7]))
local probe_at = now + interval
redis.call('HSET', KEYS[1], 'state', 'open', 'next_probe', tostring(probe_at),
           'interval', tostring(interval))
redis.call('HINCRBY', KEYS[1], 'streak', 1)
return {state, 'open', 'the probe call failed', tostring(probe_at)}
"""


def _record_twin(db: MemoryStore, keys, args):
    state_key, window_key, probe_key = keys
    now, kind, token = float(args[0]), args[1], args[2]
    size, dead_after = int(args[3]), int(args[4])
    probe_s, probe_max_s = float(args[5]), float(args[6])
    if kind == "neutral":
        if token and db.get(probe_key, now) == token:
            db.delete(probe_key)
        return None
    fields = dict(db.get(state_key, now, {}))
    state = fields.get("state", "closed")
    if state != "closed":
        if not token or db.get(probe_key, now) != token:
            return None
        db.delete(probe_key)
    db.set(window_key, [1 if kind == "failure" else 0, *db.get(window_key, now, [])][:size])
    if state == "closed":
        fields["streak"] = 0 if kind == "success" else fields.get("streak", 0) + 1
        db.set(state_key, fields)
        if fields["streak"] < dead_after:
            return None
        probe_at = now + probe_s
        db.set(state_key, {**fields, "state": "open", "next_probe": probe_at, "interval": probe_s})
        return ["closed", "open", f"{fields['streak']} calls in a row failed", repr(probe_at)]
    if kind == "success":
        db.set(state_key, {"state": "closed", "streak": 0})
        return [state, "closed", "a probe call succeeded", "-1"]
    interval = min(fields["interval"] * 2, probe_max_s)
    probe_at = now + interval
    fields.update(state="open", next_probe=probe_at, interval=interval)
    fields["streak"] = fields.get("streak", 0) + 1
    db.set(state_key, fields)
    return [state, "open", "the probe call failed", repr(probe_at)]


# KEYS: state, probe. ARGV: now, token, lease_ms. Returns {admitted, retry_at or -1,
# 1 if the call is the probe (it holds the lease) else 0} and, when a probe is let
# through an open breaker, the transition {from, to, reason}.
_ADMIT_LUA = """
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {1, '-1', 0} end
local probe_at = tonumber(redis.call('HGET', KEYS[1], 'next_probe') or 0)
if now < probe_at then return {0, tostring(probe_at), 0} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'half_open')
  if state == 'open' then return {1, '-1', 1, 'open', 'half_open', 'a probe call is let through'} end
  return {1, '-1', 1}
end
local ttl = redis.call('PTTL', KEYS[2])
return {0, tostring(now + math.max(ttl, 0) / 1000), 0}
"""


def _admit_twin(db: MemoryStore, keys, args):
    state_key, probe_key = keys
    now, token, lease_ms = float(args[0]), args[1], int(args[2])
    fields = db.get(state_key, now, {})
    state = fields.get("state", "closed")
    if state == "closed":
        return [1, "-1", 0]
    probe_at = fields.get("next_probe", 0)
    if now < probe_at:
        return [0, repr(probe_at), 0]
    if db.get(probe_key, now) is None:
        db.set(probe_key, token, now + lease_ms / 1000)
        db.set(state_key, {**fields, "state": "half_open"})
        if state == "open":
            return [1, "-1", 1, "open", "half_open", "a probe call is let through"]
        return [1, "-1", 1]
    return [0, repr(db.expires_at(probe_key)), 0]


# KEYS: probe. ARGV: token.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""


def _release_twin(db: MemoryStore, keys, args):
    # No clock here: a lease that has expired but not been swept is deleted all the same.
    if db.get(keys[0], float("-inf")) == args[0]:
        db.delete(keys[0])


# KEYS: state, window, probe. Returns {state, next probe or '', probe ttl ms, window,
# streak}.
_READ_LUA = """
local fields = redis.call('HMGET', KEYS[1], 'state', 'next_probe', 'streak')
return {fields[1] or 'closed', fields[2] or '', redis.call('PTTL', KEYS[3]),
        redis.call('LRANGE', KEYS[2], 0, -1), tonumber(fields[3] or 0)}
"""


def _read_twin(db: MemoryStore, keys, args):
    state_key, window_key, probe_key = keys
    now = float(args[0])
    fields = db.get(state_key, now, {})
    held = db.get(probe_key, now) is not None
    ttl = round((db.expires_at(probe_key) - now) * 1000) if held else -2
    probe_at = fields.get("next_probe")
    return [
        fields.get("state", "closed"),
        "" if probe_at is None else repr(probe_at),
        ttl,
        [str(v) for v in db.get(window_key, now, [])],
        fields.get("streak", 0),
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

    # Each operation is split in two for Store.batch(): `*_op()` is what to run in the
    # store, `*_from()` reads its answer.

    def admit(self, model: str, token: str) -> tuple[bool, float | None]:
        """May a call go to `model` now? Closed: yes. Open: one caller at a time,
        holding the probe lease `token`, once the next probe is due."""
        now = self.clock.now()
        admitted, retry_at, _ = self.admit_from(
            model, self.store.do(self.admit_op(model, token, now)), now
        )
        return admitted, retry_at

    def admit_op(self, model: str, token: str, now: float) -> tuple:
        state, _, probe = self._keys(model)
        lease_ms = max(1, int(self.config.probe_lease_s * 1000))
        return ("run", ADMIT, [state, probe], [repr(now), token, lease_ms])

    def admit_from(self, model: str, raw, now: float) -> tuple[bool, float | None, bool]:
        """(admitted, when it might be if not, whether the call is the probe)."""
        if len(raw) > 3:
            self._log(model, _transition([*raw[3:6], "-1"]), now)
        retry_at = float(raw[1])
        return bool(raw[0]), (None if retry_at < 0 else retry_at), bool(raw[2])

    def release(self, model: str, token: str) -> None:
        self.store.run(RELEASE, [self._keys(model)[2]], [token])

    def record(self, model: str, outcome: Outcome, token: str = "") -> dict | None:
        now = self.clock.now()
        op = self.record_op(model, outcome, token, now)
        return self.record_from(model, self.store.do(op), now)

    def record_op(self, model: str, outcome: Outcome, token: str, now: float) -> tuple:
        c = self.config
        args = [repr(now), kind_of(outcome), token, c.window, c.dead_after]
        args += [repr(c.probe_s), repr(c.probe_max_s)]
        return ("run", RECORD, list(self._keys(model)), args)

    def record_from(self, model: str, raw, now: float) -> dict | None:
        transition = _transition(raw)
        if transition:
            self._log(model, transition, now)
        return transition

    def state(self, model: str) -> BreakerState:
        now = self.clock.now()
        return self.state_from(self.store.do(self.state_op(model, now)), now)

    def state_op(self, model: str, now: float) -> tuple:
        return ("run", READ, list(self._keys(model)), [repr(now)])

    def state_from(self, raw, now: float) -> BreakerState:
        state, probe_at, ttl, window, streak = raw
        open_until = float(probe_at) if probe_at else None
        probe_until = now + ttl / 1000 if ttl and ttl > 0 else None
        probe_available = (
            state != "closed"
            and open_until is not None
            and now >= open_until
            and probe_until is None
        )
        if state != "closed" and probe_until is not None:
            # A probe in flight: nobody else gets in before its lease ends.
            open_until = max(open_until or now, probe_until)
        window = [int(v) for v in window]
        return BreakerState(
            state=state,
            open_until=open_until if state != "closed" else None,
            failures=sum(window),
            calls=len(window),
            probe_available=probe_available,
            streak=int(streak),
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
            f" (next probe in {until - now:.0f} s)" if until else "",
        )
