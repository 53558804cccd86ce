"""What both providers share: pooled httpx clients, timeouts, transport errors, error
bodies and the 429 details (RetryInfo, QuotaFailure), mapped to the taxonomy.

Only the upstream package imports httpx (see base.py). A call is made either blocking
(`post_json`: Batch mode, the tests) or on an event loop (`agenerate`: the caller,
generator/caller, which keeps hundreds of calls in flight in one process).
"""

import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import ssl
import threading
import time
from collections.abc import Iterator
from functools import cache

import httpx

from generator.resilience.catalogue import ModelSpec
from generator.resilience.taxonomy import Outcome
from generator.upstream.base import UpstreamError

# One client per (process, base URL): connections are reused between calls, and a forked
# process never shares a socket with its parent (the pid is part of the key).
_clients: dict[tuple[int, str], httpx.Client] = {}
_clients_lock = threading.Lock()


@cache
def ssl_context() -> ssl.SSLContext:
    """One TLS context per process, shared by every client: loading the CA bundle costs
    ~50 ms, which httpx pays for each new client (even one that only speaks plain
    http) unless it is handed a context."""
    return ssl.create_default_context()


def client_for(base_url: str) -> httpx.Client:
    key = (os.getpid(), base_url)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = httpx.Client(
                    limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                    follow_redirects=False,
                    verify=ssl_context(),
                )
                _clients[key] = client
    return client


# The most connections in one of the caller's pools (AsyncClients).
POOL_CONNECTIONS = 32


class _Pool:
    def __init__(self, client: httpx.AsyncClient):
        self.client = client
        self.in_flight = 0


class AsyncClients:
    """The event loop's clients (the caller's: generator/caller): per base URL, pools of
    at most POOL_CONNECTIONS connections, together as many as the calls the caller
    allows at once (a call in flight holds one connection for its whole length), and a
    call goes to the pool with the fewest calls in flight.

    One pool of hundreds would do the same work at a cost that grows with it: httpcore
    looks at every connection of a pool whenever one of its requests starts or ends (is
    it expired, idle, free?), each look a system call or two. At a few hundred calls in
    flight that was most of the caller's CPU per call (docs/benchmarks.md, "Cost per
    image"); pools of 32 keep it to a few dozen looks, whatever the concurrency."""

    def __init__(self, max_connections: int):
        self.pools_per_url = max(1, -(-max_connections // POOL_CONNECTIONS))
        size = -(-max_connections // self.pools_per_url)
        self.limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self._pools: dict[str, list[_Pool]] = {}

    @contextlib.contextmanager
    def use(self, base_url: str) -> Iterator[httpx.AsyncClient]:
        """The client of the least busy pool for `base_url`, counted busy until the block
        ends (the event loop's thread alone uses it: no lock)."""
        pools = self._pools.get(base_url)
        if pools is None:
            pools = self._pools[base_url] = [
                _Pool(self.new_client()) for _ in range(self.pools_per_url)
            ]
        pool = min(pools, key=lambda p: p.in_flight)
        pool.in_flight += 1
        try:
            yield pool.client
        finally:
            pool.in_flight -= 1

    def new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(limits=self.limits, follow_redirects=False, verify=ssl_context())

    def in_flight(self, base_url: str) -> list[int]:
        """The calls in flight in each pool of `base_url` (for the tests)."""
        return [pool.in_flight for pool in self._pools.get(base_url, [])]

    async def aclose(self) -> None:
        for pools in self._pools.values():
            for pool in pools:
                await pool.client.aclose()
        self._pools.clear()


def timeout_for(spec: ModelSpec) -> httpx.Timeout:
    """Connect and read timeouts set apart: a refused connection is known in seconds,
    while an image model may legitimately think for minutes (a read timeout under 120 s
    misreports slow successes as failures)."""
    return httpx.Timeout(
        connect=spec.connect_timeout_s,
        read=spec.read_timeout_s,
        write=spec.connect_timeout_s + 30.0,
        pool=spec.connect_timeout_s,
    )


class Redactor:
    """Removes secrets from any text before it becomes an error message."""

    def __init__(self, *secrets: str):
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text


def post_json(
    base_url: str,
    path: str,
    *,
    body: dict,
    headers: dict,
    spec: ModelSpec,
    redact: Redactor,
) -> tuple[dict, int]:
    """POST once; returns (the 200 answer's JSON object, latency_ms) or raises the
    UpstreamError of the call: TIMEOUT / NETWORK when no answer came, the mapped error
    of a non-200 answer, MALFORMED for a 200 that is not a JSON object."""
    started = time.monotonic()
    try:
        response = client_for(base_url).post(
            base_url + path, json=body, headers=headers, timeout=timeout_for(spec)
        )
    except httpx.HTTPError as exc:
        raise _no_answer(exc, spec, redact, started) from exc
    return _json_answer(response, spec, _ms(started), redact)


async def agenerate(clients: AsyncClients, provider, call):
    """One call of `provider` (gemini.py, openai_images.py: anything with `exchange()`
    and `parse_success()`) on the event loop, through `clients`: the GenerationResult,
    or its UpstreamError raised. The same exchange, errors and parsing as the
    provider's blocking `generate()` (post_json); the answer is parsed off the loop."""
    x = provider.exchange(call)
    spec, redact = call.model, x["redact"]
    started = time.monotonic()
    try:
        with clients.use(x["base_url"]) as client:
            response = await client.post(
                x["base_url"] + x["path"],
                json=x["body"],
                headers=x["headers"],
                timeout=timeout_for(spec),
            )
    except httpx.HTTPError as exc:
        raise _no_answer(exc, spec, redact, started) from exc
    # The body is in: what is left is CPU work (the JSON, and for an image its base64,
    # its decode, check and thumbnail: tens of ms at 2K), done in the loop's executor so
    # that the loop goes on moving the other calls meanwhile.
    return await asyncio.get_running_loop().run_in_executor(
        None, _parse_answer, response, provider, call, _ms(started), redact
    )


def _parse_answer(response: httpx.Response, provider, call, latency_ms: int, redact: Redactor):
    answer, latency_ms = _json_answer(response, call.model, latency_ms, redact)
    return provider.parse_success(answer, call, latency_ms)


def _json_answer(response: httpx.Response, spec: ModelSpec, latency_ms: int, redact: Redactor):
    """(the JSON object of a 200 answer, latency_ms), or the UpstreamError it means."""
    if response.status_code != 200:
        raise error_from_response(response, spec, latency_ms, redact)
    answer = json_or_none(response)
    if not isinstance(answer, dict):
        raise answer_error(
            spec, latency_ms, redact, Outcome.MALFORMED, "the 200 answer is not a JSON object"
        )
    return answer, latency_ms


def send(
    method: str,
    url: str,
    *,
    spec: ModelSpec,
    redact: Redactor,
    headers: dict,
    json_body: dict | None = None,
    content: bytes | None = None,
) -> tuple[httpx.Response, int]:
    """One exchange of Batch mode or the Files API: (the response, whatever its status,
    and latency_ms), or the UpstreamError of a call that got no answer. The caller maps
    a non-2xx answer with error_from_response()."""
    started = time.monotonic()
    parsed = httpx.URL(url)
    # Pooled per origin, like post_json's clients: an upload URL has the API's origin.
    origin = f"{parsed.scheme}://{parsed.netloc.decode()}"
    try:
        response = client_for(origin).request(
            method,
            url,
            json=json_body,
            content=content,
            headers=headers,
            timeout=timeout_for(spec),
        )
    except httpx.HTTPError as exc:
        raise _no_answer(exc, spec, redact, started) from exc
    return response, _ms(started)


def _no_answer(exc: httpx.HTTPError, spec: ModelSpec, redact: Redactor, started: float):
    """The UpstreamError of a call that got no answer (TIMEOUT or NETWORK)."""
    outcome, message = _transport_failure(exc, spec, redact)
    return UpstreamError(outcome, message, latency_ms=_ms(started))


def _transport_failure(exc: httpx.HTTPError, spec: ModelSpec, redact: Redactor):
    """(outcome, message) of a call that got no answer."""
    if isinstance(exc, httpx.ConnectTimeout):
        what = f"no connection within {spec.connect_timeout_s:g} s (connect timeout)"
    elif isinstance(exc, httpx.ReadTimeout):
        what = f"no answer within {spec.read_timeout_s:g} s (read timeout)"
    elif isinstance(exc, httpx.TimeoutException):
        what = f"{type(exc).__name__} while talking to the upstream"
    else:
        return Outcome.NETWORK, redact(f"{spec.id}: {type(exc).__name__}: {exc}")
    return Outcome.TIMEOUT, f"{spec.id}: {what}"


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def answer_error(
    spec: ModelSpec, latency_ms: int, redact: Redactor, outcome: Outcome, message: str, **fields
) -> UpstreamError:
    """The error of a 200 answer that holds no usable image."""
    return UpstreamError(
        outcome,
        redact(f"{spec.id}: {message}"),
        http_status=200,
        latency_ms=latency_ms,
        **fields,
    )


def decode_image(data, fail) -> bytes:
    """The bytes of a base64 image, or `fail`'s MALFORMED error."""
    try:
        return base64.b64decode(data or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise fail(Outcome.MALFORMED, "the image data is not valid base64") from None


def json_or_none(response: httpx.Response):
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None


# --- Error bodies -------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_RETRY_IN = re.compile(r"[Pp]lease retry in (\d+(?:\.\d+)?)(ms|s)\b")


def parse_duration(value) -> float | None:
    """A protobuf Duration as JSON ("19s", "45.837906927s") in seconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1))
    return None


def error_envelope(body) -> dict:
    """The `error` object of a Google or OpenAI error body (also a one-element list, as
    the google-genai SDK accepts); {} when there is none."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        return {}
    error = body.get("error", body)
    return error if isinstance(error, dict) else {"message": str(error)}


def google_details(error: dict) -> list[dict]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def rate_limit_details(error: dict) -> tuple[float | None, str, str]:
    """(retry delay in s, quota id, scope "minute" / "day" / "") from a Google 429.

    A quota id with "PerDay", or a quota value of 0 (the free tier has no image quota),
    is terminal until the daily reset; "PerMinute" is worth a retry after the delay.
    The parsing is defensive: detail order varies and fields may be missing or odd.
    """
    retry_after = None
    quota_ids: list[str] = []
    zero_limit = False
    for detail in google_details(error):
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.RetryInfo"):
            retry_after = parse_duration(detail.get("retryDelay"))
        elif kind.endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or []:
                if not isinstance(violation, dict):
                    continue
                if violation.get("quotaId"):
                    quota_ids.append(str(violation["quotaId"]))
                if str(violation.get("quotaValue", "")) == "0":
                    zero_limit = True
    if retry_after is None:
        match = _RETRY_IN.search(str(error.get("message", "")))
        if match:
            retry_after = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    day = [q for q in quota_ids if "PerDay" in q]
    minute = [q for q in quota_ids if "PerMinute" in q]
    if day or zero_limit:
        return retry_after, (day or quota_ids or [""])[0], "day"
    if minute:
        return retry_after, minute[0], "minute"
    return retry_after, (quota_ids or [""])[0], ""


def stated_quota(error: dict) -> int | None:
    """The per-minute quota of calls a Google 429 states (QuotaFailure's quotaValue of a
    requests or images per minute quota; the smallest if several), or None. A token
    quota (input tokens per minute) counts something else and is left out."""
    values = []
    for detail in google_details(error):
        if not str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            continue
        for violation in detail.get("violations") or []:
            if not isinstance(violation, dict):
                continue
            name = f"{violation.get('quotaId', '')} {violation.get('quotaMetric', '')}".lower()
            if "perminute" not in name.replace("_", "") or "token" in name:
                continue
            if "request" not in name and "image" not in name:
                continue
            try:
                value = int(str(violation.get("quotaValue", "")).strip())
            except ValueError:
                continue
            if value > 0:
                values.append(value)
    return min(values) if values else None


def rate_limited_fields(error: dict, retry_after: float | None, quota_id: str, scope: str):
    """UpstreamError's fields for a 429 (a direct call's or a batch line's): a delay to
    wait out with no scope stated is a per-minute quota, whose stated call quota, if
    any, goes to the limiter."""
    if not scope and retry_after is not None:
        scope = "minute"
    fields = {"retry_after_s": retry_after, "quota_id": quota_id, "quota_scope": scope}
    if scope == "minute":
        fields["quota_limit"] = stated_quota(error)
    return fields


_OUTAGE_WORDS = re.compile(r"currently unavailable|maintenance|outage", re.IGNORECASE)


def classify_status(http_status: int, error: dict) -> Outcome:
    """The taxonomy outcome of a non-200 answer, from the HTTP code and the body's
    status/code fields (never from message text alone, which Google changed in 2026).

    Every 503 is a capacity problem (overloaded) unless it says it is an outage: the
    overload messages vary ("overloaded", "high demand", "Deadline expired"), while
    Google's outage answer is "The service is currently unavailable."
    """
    status = str(error.get("status") or "").upper()
    reasons = {str(d.get("reason", "")) for d in google_details(error)}
    if http_status == 400:
        if status == "UNAUTHENTICATED" or any(r.startswith("API_KEY") for r in reasons):
            return Outcome.AUTH
        return Outcome.BAD_REQUEST
    if http_status in (401, 403):
        return Outcome.AUTH
    if http_status == 404:
        return Outcome.NOT_FOUND
    if http_status == 408:
        return Outcome.TIMEOUT
    if http_status == 429:
        return Outcome.RATE_LIMITED
    if http_status == 503:
        message = str(error.get("message", ""))
        if "MODEL_CAPACITY_EXHAUSTED" in reasons or not _OUTAGE_WORDS.search(message):
            return Outcome.OVERLOADED
        return Outcome.UNAVAILABLE
    if http_status >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.BAD_REQUEST


def error_from_response(
    response: httpx.Response, spec: ModelSpec, latency_ms: int, redact: Redactor
) -> UpstreamError:
    """One UpstreamError for a non-200 answer of either protocol."""
    body = json_or_none(response)
    error = error_envelope(body)
    if body is None or not error:
        # A proxy's HTML page or an empty body: the HTTP code is all there is.
        outcome = classify_status(response.status_code, {"message": response.text[:200]})
        if response.status_code == 503 and not response.text.strip():
            outcome = Outcome.UNAVAILABLE
        message = f"{spec.id}: HTTP {response.status_code} {response.reason_phrase}"
        return UpstreamError(
            outcome,
            redact(message),
            http_status=response.status_code,
            retry_after_s=header_retry_after(response),
            latency_ms=latency_ms,
        )
    outcome = classify_status(response.status_code, error)
    text = str(error.get("message", "")).strip()
    label = str(error.get("status") or error.get("code") or error.get("type") or "")
    message = f"{spec.id}: {response.status_code} {label}: {text[:300]}".replace("  ", " ")
    fields = {}
    if outcome == Outcome.RATE_LIMITED:
        retry_after, quota_id, scope = rate_limit_details(error)
        if retry_after is None:
            retry_after = header_retry_after(response)
        if not scope and error.get("code") == "insufficient_quota":
            scope = "day"  # OpenAI: the account's credit is used up; no retry helps
        fields = rate_limited_fields(error, retry_after, quota_id, scope)
    elif outcome in (Outcome.OVERLOADED, Outcome.UNAVAILABLE):
        fields = {"retry_after_s": header_retry_after(response)}
    if outcome == Outcome.BAD_REQUEST and error.get("code") in OPENAI_BLOCK_CODES:
        outcome = Outcome.BLOCKED
        fields = {"block_reason": str(error["code"])}
    return UpstreamError(
        outcome,
        redact(message),
        http_status=response.status_code,
        latency_ms=latency_ms,
        **fields,
    )


# OpenAI's safety refusals come as 400s with these codes.
OPENAI_BLOCK_CODES = {"moderation_blocked", "content_policy_violation"}


def header_retry_after(response: httpx.Response) -> float | None:
    """OpenAI-style `retry-after-ms`, then `retry-after` in seconds (Gemini sends
    neither; a relay might). HTTP-date values are ignored: relays don't use them."""
    for name, factor in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = response.headers.get(name)
        if raw:
            try:
                value = float(raw) * factor
            except ValueError:
                continue
            if value >= 0:
                return value
    return None
