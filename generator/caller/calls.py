"""The two Redis hand-overs between the workers and the callers: a call to make (a list
every caller pops from) and its answer (a key per request and step, read once by the
step that records it, deleted on reading; its TTL only covers a lost recording step).

Messages carry ids, the prompt and the names of reference files, never image bytes;
an answer carries the image once, for the seconds until a worker records it.
"""

import json
import pickle
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from generator.queue import get_queue
from generator.resilience.taxonomy import Outcome
from generator.upstream.base import GenerationResult, UpstreamError

CALLS_KEY = "steadyshot:calls"
# The live callers (the monitoring page counts them): a hash of caller name → "calls in
# flight:until", refreshed by each caller's heartbeat; an entry past its time is a caller
# that stopped beating, dropped by the next reader. One key, read whole: no scan of the
# keyspace, which holds every job and answer too.
CALLERS_KEY = "steadyshot:callers"
# Longer than any recording step waits in the queue; a step whose answer expired calls
# again (jobs.record).
ANSWER_TTL_S = 900


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

    def dumps(self) -> bytes:
        # UpstreamError does not pickle (keyword-only fields): its fields travel instead.
        error = None
        if self.error is not None:
            e = self.error
            error = {
                "outcome": str(e.outcome),
                "message": e.message,
                "http_status": e.http_status,
                "retry_after_s": e.retry_after_s,
                "quota_id": e.quota_id,
                "quota_scope": e.quota_scope,
                "quota_limit": e.quota_limit,
                "block_reason": e.block_reason,
                "latency_ms": e.latency_ms,
            }
        return pickle.dumps({"started": self.started, "result": self.result, "error": error})

    @classmethod
    def loads(cls, raw: bytes) -> "Answer":
        fields = pickle.loads(raw)  # noqa: S301 (our own Redis, written by our callers)
        error = fields["error"]
        if error is not None:
            outcome, message = Outcome(error.pop("outcome")), error.pop("message")
            error = UpstreamError(outcome, message, **error)
        return cls(fields["started"], fields["result"], error)


def connection():
    return get_queue().connection


def answer_key(request_id: str, step: int) -> str:
    return f"steadyshot:answer:{request_id}:{step}"


def send(call: Call) -> None:
    """Put the call where the callers take it (oldest first)."""
    connection().rpush(CALLS_KEY, call.dumps())


def store_answer(request_id: str, step: int, answer: Answer, pipeline) -> None:
    """Keep the answer for the step that records it (on `pipeline`, with its job)."""
    pipeline.set(answer_key(request_id, step), answer.dumps(), ex=ANSWER_TTL_S)


def take_answer(request_id: str, step: int) -> Answer | None:
    """The answer of the step's call, removed from Redis; None if there is none (Redis
    lost it, or it expired)."""
    raw = connection().getdel(answer_key(request_id, step))
    return Answer.loads(raw) if raw is not None else None


def drop_answer(request_id: str, step: int) -> None:
    connection().delete(answer_key(request_id, step))


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
