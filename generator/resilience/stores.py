"""The shared store under the breaker and the limiter: Redis in production, memory in
unit tests and the benchmark's simulator.

The store knows keys, values and expiry, nothing about breakers or quotas. Every
operation that reads and then writes shared state is a `Script`: a Lua script for Redis
(Redis runs one script at a time, so all workers on all machines see one consistent
state without locks) and its Python twin for memory (run under the store's lock). Each
script and its twin are written side by side in the module that owns the state
(breaker.py, limiter.py); the tests run the same cases against both stores
(tests/unit/resilience and tests/integration/resilience) to keep them equivalent.

Times are epoch seconds from the caller's Clock (clock.py), passed in as arguments, so
the simulator's virtual time works too.

`batch()` runs several operations in one go: one round trip to Redis instead of one
each (Health.snapshot() reads a model's breaker, quota, cool-down and latencies at
once). Each operation is as atomic as alone; the batch as a whole is not.
"""

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import NoScriptError


@dataclass(frozen=True)
class Script:
    """One atomic read-then-write: `lua` for Redis, `twin(store, keys, args)` for memory.
    Both take the same keys (without the store's prefix) and arguments and answer the
    same values: strings, integers, None and lists of those, as Redis answers a script."""

    lua: str
    twin: Callable[["MemoryStore", list[str], list], object]


# Operations for Store.batch(), each answered as its method answers:
#   ("run", script, keys, args), ("get_float", key, now), ("newest", key, n),
#   ("push_capped", key, value, maxlen)
Op = tuple


class Store(Protocol):
    def run(self, script: Script, keys: list[str], args: list) -> object: ...

    def do(self, op: Op) -> object: ...

    def batch(self, ops: list[Op]) -> list: ...

    def push_capped(self, key: str, value: str, maxlen: int) -> None: ...

    def newest(self, key: str, n: int) -> list[str]: ...

    def set_until(self, key: str, value: float, until: float, now: float) -> None: ...

    def get_float(self, key: str, now: float) -> float | None: ...


def _decoded(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def shared_client(url: str, **options):
    """One redis-py client per URL, options and process, its connection pool shared by
    every caller (a Health is made for every step; the monitoring page reads Redis on
    every view and scrape): a client made per call opens a connection each time and
    leaves it for the garbage collector. redis-py's pool is thread-safe and starts
    afresh in a forked child."""
    import redis

    key = (url, tuple(sorted(options.items())))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = redis.Redis.from_url(url, **options)
        return _clients[key]


class RedisStore:
    def __init__(self, conn, prefix: str = "steadyshot:"):
        self.conn = conn
        self.prefix = prefix
        self._scripts: dict[Script, object] = {}

    def _k(self, key: str) -> str:
        return self.prefix + key

    def _registered(self, script: Script):
        registered = self._scripts.get(script)
        if registered is None:
            registered = self._scripts[script] = self.conn.register_script(script.lua)
        return registered

    def run(self, script, keys, args):
        return _decoded(self._registered(script)(keys=[self._k(k) for k in keys], args=args))

    def do(self, op):
        """One operation of batch()'s kinds, alone."""
        return getattr(self, op[0])(*op[1:])

    def batch(self, ops):
        """One pipeline (not a transaction). A script Redis does not hold (it restarted
        since this process loaded it) did not run: it runs again alone, after the rest."""
        pipe = self.conn.pipeline(transaction=False)
        for op in ops:
            kind, key = op[0], op[1]
            if kind == "run":
                keys = [self._k(k) for k in op[2]]
                pipe.evalsha(self._registered(key).sha, len(keys), *keys, *op[3])
            elif kind == "get_float":
                pipe.get(self._k(key))
            elif kind == "newest":
                pipe.lrange(self._k(key), 0, op[2] - 1)
            elif kind == "push_capped":
                pipe.lpush(self._k(key), op[2]).ltrim(self._k(key), 0, op[3] - 1)
            else:
                raise ValueError(f"unknown store operation {kind!r}")
        raw = iter(pipe.execute(raise_on_error=False))
        answers = []
        for op in ops:
            value = next(raw)
            if op[0] == "push_capped":
                value = next(raw)  # LTRIM's answer after LPUSH's
            if isinstance(value, NoScriptError):
                value = self.do(op)  # loads the script, then runs it
            elif isinstance(value, Exception):
                raise value
            elif op[0] == "run":
                value = _decoded(value)
            elif op[0] == "get_float":
                value = float(value) if value is not None else None
            elif op[0] == "newest":
                value = [v.decode() for v in value]
            else:
                value = None
            answers.append(value)
        return answers

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


class MemoryStore:
    """The same operations for one process; keys expire lazily against the caller's
    clock (the simulator's virtual time). Twins use get/set/delete under the lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values: dict[str, tuple[object, float | None]] = {}  # key -> (value, expires_at)

    def run(self, script, keys, args):
        with self.lock:
            return script.twin(self, keys, args)

    def do(self, op):
        return getattr(self, op[0])(*op[1:])

    def batch(self, ops):
        return [self.do(op) for op in ops]

    # --- for the twins (called under the lock) -------------------------------------------

    def get(self, key, now, default=None):
        value, expires = self.values.get(key, (default, None))
        if expires is not None and now >= expires:
            del self.values[key]
            return default
        return value

    def expires_at(self, key) -> float | None:
        return self.values.get(key, (None, None))[1]

    def set(self, key, value, expires_at=None):
        self.values[key] = (value, expires_at)

    def delete(self, key):
        self.values.pop(key, None)

    # --- generic operations ------------------------------------------------------------

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
            self.set(key, value, until)

    def get_float(self, key, now):
        with self.lock:
            return self.get(key, now)
