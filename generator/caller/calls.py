"""The two Redis hand-overs between the workers and the callers: a call to make (a list
every caller pops from) and its answer (a key per request and step, read once by the
step that records it, deleted on reading; its TTL only covers a lost recording step).

Messages carry ids, the prompt and the names of reference files, never image bytes;
an answer carries the image once, for the seconds until a worker records it.
"""

import json
import math
import pickle
from dataclasses import asdict, dataclass
from datetime import datetime

from generator.queue import get_queue
from generator.resilience.taxonomy import Outcome
from generator.upstream.base import GenerationResult, UpstreamError

CALLS_KEY = "steadyshot:calls"
# A live caller's presence: one key per caller holding its calls in flight, refreshed
# by its heartbeat and expiring when it stops beating (the monitoring page counts them).
CALLER_KEY_PREFIX = "steadyshot:caller:"
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
    connection().set(CALLER_KEY_PREFIX + name, in_flight, ex=max(1, math.ceil(ttl_s)))


def retire(name: str) -> None:
    connection().delete(CALLER_KEY_PREFIX + name)


def callers(connection) -> dict:
    """{"callers": live callers, "in_flight": their calls in flight, "waiting": calls
    no caller has taken yet}."""
    keys = list(connection.scan_iter(match=CALLER_KEY_PREFIX + "*", count=100))
    counts = connection.mget(keys) if keys else []
    live = [int(c) for c in counts if c is not None]  # a key may expire between the two
    return {
        "callers": len(live),
        "in_flight": sum(live),
        "waiting": connection.llen(CALLS_KEY),
    }
