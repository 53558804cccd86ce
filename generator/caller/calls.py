"""The Redis hand-over between the workers and the callers: a call to make (a list every
caller pops from), and the callers' presence. The answer never travels: the caller that
made the call records it (generator.jobs.record).

Messages carry ids, the prompt and the names of reference files, never image bytes.
"""

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from generator.queue import get_queue
from generator.upstream.base import GenerationResult, UpstreamError

CALLS_KEY = "steadyshot:calls"
# The live callers (the monitoring page counts them): a hash of caller name → "calls in
# flight:until", refreshed by each caller's heartbeat; an entry past its time is a caller
# that stopped beating, dropped by the next reader. One key, read whole: no scan of the
# keyspace, which holds every job too.
CALLERS_KEY = "steadyshot:callers"


@dataclass(frozen=True)
class Call:
    """A call as a worker's step chose it: enough to make it without the database."""

    request_id: str
    step: int
    model: str
    prompt: str
    aspect_ratio: str | None
    image_size: str | None
    references: tuple[tuple[str, str], ...] = ()  # (storage name, mime)

    def dumps(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def loads(cls, raw: bytes) -> "Call":
        fields = json.loads(raw)
        fields["references"] = tuple(tuple(r) for r in fields.get("references", ()))
        return cls(**fields)


@dataclass
class Answer:
    """What came of a call: `result` or `error`, when it started and how long it took."""

    started: datetime
    result: GenerationResult | None = None
    error: UpstreamError | None = None


def connection():
    return get_queue().connection


def send(call: Call) -> None:
    """Put the call where the callers take it (oldest first)."""
    connection().rpush(CALLS_KEY, call.dumps())


def announce(name: str, in_flight: int, ttl_s: float) -> None:
    """Say that caller `name` is alive with `in_flight` calls, for `ttl_s` seconds."""
    connection().hset(CALLERS_KEY, name, f"{in_flight}:{time.time() + ttl_s!r}")


def retire(name: str) -> None:
    connection().hdel(CALLERS_KEY, name)


def callers(connection) -> dict:
    """{"callers": live callers, "in_flight": their calls in flight, "waiting": calls
    no caller has taken yet}."""
    now, live, gone = time.time(), [], []
    for name, value in connection.hgetall(CALLERS_KEY).items():
        in_flight, until = value.decode().split(":")
        if float(until) > now:
            live.append(int(in_flight))
        else:
            gone.append(name)
    if gone:
        connection.hdel(CALLERS_KEY, *gone)
    return {
        "callers": len(live),
        "in_flight": sum(live),
        "waiting": connection.llen(CALLS_KEY),
    }
