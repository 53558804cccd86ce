"""The sandbox upstream: a local HTTP server that speaks Gemini's `generateContent` (under
/v1 and /v1beta), the OpenAI Images API (/v1/images/generations) and a relay's chat
completions with image output (/v1/chat/completions) as Google, OpenAI and the relays
do, with the failure behaviour of docs/upstream.md, so the product runs and is tested
with no key and no internet. A development and test tool, never on the public URL space.

Threads, not asyncio: every call sleeps for its (scaled) latency, and a thread per
connection keeps hundreds of slow calls in flight with the standard library alone.
"""

import base64
import contextlib
import json
import logging
import math
import random
import re
import secrets
import socket
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from generator.upstream.sandbox import painter
from generator.upstream.sandbox.batches import BatchBook
from generator.upstream.sandbox.profiles import (
    QUOTA_IDS,
    QUOTA_METRICS,
    Clock,
    ModelState,
    Profile,
    ProfileError,
    Verdict,
)

log = logging.getLogger(__name__)

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_SIZES = ("1K", "2K", "4K")
VARIANTS = (
    "blocked", "overloaded", "unavailable", "rate_limited", "quota_day", "server_error",
    "no_image", "bad_request", "auth", "not_found", "malformed", "garbage_image",
    "disconnect",
)  # fmt: skip
# Words that act on a whole batch in Batch mode (batches.py) and on nothing else:
# `sandbox:batch_expired[=<hours>]`, `sandbox:batch_failed`, `sandbox:batch_slow=<hours>`.
BATCH_VARIANTS = ("batch_expired", "batch_failed", "batch_slow")
VALUED = ("slow", "batch_slow", "batch_expired")
# `sandbox:<variant>[@<model>][*<n>]` or `sandbox:slow=<seconds>[@<model>][*<n>]`.
TRIGGER = re.compile(
    r"sandbox:(?P<variant>[a-z_]+)(?:=(?P<value>\d+(?:\.\d+)?))?"
    r"(?:@(?P<model>[A-Za-z0-9._\-]+))?(?:\*(?P<times>\d+))?"
)
# What a variant counts as in the call log (the taxonomy's words).
OUTCOME_OF = {"quota_day": "rate_limited", "garbage_image": "malformed"}
# `sandbox:garbage_image`: a 200 whose image opens as a 1024×1024 PNG (signature, header,
# the start of its pixel data) and then is garbage cut short: only a full decode tells.
GARBAGE_PNG = base64.b64encode(
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x04\x00\x00\x00\x04\x00\x08\x02"
    b"\x00\x00\x00\xf0\x7f\xbc\xd4\x00\x00\x10\x00IDAT" + b"garbage " * 8
).decode()
OVERLOAD_MESSAGES = (
    "The model is overloaded. Please try again later.",
    "This model is currently experiencing high demand. Spikes in demand are usually "
    "temporary. Please try again later.",
)
FORCED_LIMITS = {"rpm": 20, "ipm": 20, "rpd": 1000}
# The fixed error answers of a forced variant: (HTTP code, status, message) for Gemini,
# (HTTP code, message, type, code) for OpenAI.
GEMINI_ERRORS = {
    "unavailable": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "server_error": (500, "INTERNAL", "Internal error encountered."),
    "bad_request": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "auth": (
        403, "PERMISSION_DENIED", "Your API key was reported as leaked. Please use another API key."
    ),
}  # fmt: skip
OPENAI_ERRORS = {
    "blocked": (
        400, "Your request was rejected by the safety system. safety_violations=[sandbox].",
        "image_generation_user_error", "moderation_blocked",
    ),
    "overloaded": (
        503, "The engine is currently overloaded, please try again later", "server_error", None
    ),
    "unavailable": (503, "The service is currently unavailable.", "server_error", None),
    "server_error": (
        500, "The server had an error while processing your request. Sorry about that!",
        "server_error", None,
    ),
    "bad_request": (400, "Invalid value for 'size'.", "invalid_request_error", None),
    "auth": (401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    "quota_day": (
        429, "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota", "insufficient_quota",
    ),
}  # fmt: skip
# Where a relay's chat completion puts its image (docs/wire.md §4.4): `images`, OpenRouter's
# `message.images[]` (the default); `parts`, content parts; `markdown`, a Markdown data URI
# in `message.content` (one-api / new-api). Set with POST /_sandbox/relay-shape.
RELAY_SHAPES = ("images", "parts", "markdown")
MAX_BODY = 64 * 1024 * 1024
MAX_CALLS_KEPT = 200_000


@dataclass(frozen=True)
class Trigger:
    variant: str  # one of VARIANTS, or "slow"
    value: float | None
    model: str | None
    times: int | None
    token: str  # the trigger as written, for counting calls per prompt


def parse_triggers(prompt: str) -> list[Trigger]:
    """The trigger words in a prompt; unknown variants are left as plain text."""
    found = []
    for m in TRIGGER.finditer(prompt):
        variant = m["variant"]
        if variant in ("slow", "batch_slow") and m["value"] is None:
            continue
        if variant not in (*VARIANTS, *BATCH_VARIANTS, "slow"):
            continue
        if m["value"] is not None and variant not in VALUED:
            continue
        found.append(
            Trigger(
                variant,
                float(m["value"]) if m["value"] else None,
                m["model"],
                int(m["times"]) if m["times"] else None,
                m[0],
            )
        )
    return found


def format_duration(seconds: float) -> str:
    """A protobuf Duration as Google writes it: "19s", "45.837906927s"."""
    seconds = max(seconds, 0.001)
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


class Sandbox:
    """The shared state of a running sandbox: profile, clock, per-model state machines,
    trigger counters and the call log. Every method is thread-safe."""

    def __init__(
        self,
        profiles: dict[str, Profile],
        models: dict[str, str],  # model id -> its provider (catalogue.PROVIDERS)
        *,
        profile: str = "calm",
        seed: int = 0,
        time_scale: float = 1.0,
    ):
        if profile not in profiles:
            raise ProfileError(f"Unknown profile {profile!r}; known: {', '.join(profiles)}")
        self.profiles = profiles
        self.models = models
        self.initial_seed = seed
        self.clock = Clock(1.0)
        self.clock.set_scale(time_scale)
        self.lock = threading.Lock()
        self.calls: deque[dict] = deque(maxlen=MAX_CALLS_KEPT)
        self.trigger_counts: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0  # the most calls in flight at once since the last reset
        self.relay_shape = RELAY_SHAPES[0]
        # Batch mode builds its answers with this module's helpers, handed in.
        self.batches = BatchBook(self, sys.modules[__name__])
        self._switch(profile, seed)

    # --- admin ----------------------------------------------------------------------

    def _switch(self, name: str, seed: int) -> None:
        now = self.clock.now()
        self.profile = self.profiles[name]
        self.seed = seed
        self.rngs = {m: random.Random(f"{seed}:{m}") for m in self.models}
        self.states = {
            m: ModelState(self.profile.behaviour(m), now, self.rngs[m]) for m in self.models
        }

    def set_profile(self, name: str, seed: int | None = None) -> None:
        if name not in self.profiles:
            raise ProfileError(f"Unknown profile {name!r}; known: {', '.join(self.profiles)}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ProfileError("seed must be a whole number")
        with self.lock:
            self._switch(name, self.seed if seed is None else seed)

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.trigger_counts.clear()
            self.max_in_flight = self.in_flight
            self.relay_shape = RELAY_SHAPES[0]
            self._switch("calm", self.initial_seed)
        self.batches.reset()

    def set_time_scale(self, scale) -> None:
        with self.lock:
            self.clock.set_scale(scale)

    def set_relay_shape(self, shape) -> None:
        if shape not in RELAY_SHAPES:
            raise ProfileError(f"Unknown relay shape {shape!r}; known: {', '.join(RELAY_SHAPES)}")
        with self.lock:
            self.relay_shape = shape

    def state(self) -> dict:
        with self.lock:
            now = self.clock.now()
            return {
                "profile": self.profile.name,
                "description": self.profile.description,
                "profiles": sorted(self.profiles),
                "seed": self.seed,
                "time_scale": self.clock.scale,
                "virtual_time_s": round(now, 3),
                "calls": len(self.calls),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "relay_shape": self.relay_shape,
                "models": {m: s.describe(now) for m, s in self.states.items()},
            }

    def call_log(self) -> list[dict]:
        with self.lock:
            return list(self.calls)

    # --- calls ----------------------------------------------------------------------

    def decide(self, model: str, prompt: str) -> tuple[str, Verdict]:
        """(variant, verdict) for one call: a trigger word in the prompt wins over the
        profile; `slow=` only changes the latency."""
        with self.lock:
            rng = self.rngs[model]
            forced, slow = None, None
            for trigger in parse_triggers(prompt):
                if trigger.model and trigger.model != model:
                    continue
                if trigger.variant in BATCH_VARIANTS:
                    continue
                if trigger.times is not None:
                    key = (prompt, trigger.token, model)
                    if self.trigger_counts[key] >= trigger.times:
                        continue
                    self.trigger_counts[key] += 1
                if trigger.variant == "slow":
                    slow = trigger.value
                elif forced is None:
                    forced = trigger.variant
            if forced:
                b = self.states[model].behaviour
                verdict = Verdict(OUTCOME_OF.get(forced, forced), rng.uniform(*b.error_latency_s))
                variant = forced
            else:
                verdict = self.states[model].decide(self.clock.now(), rng)
                variant = verdict.outcome
                if verdict.quota_dim == "rpd":
                    variant = "quota_day"
            if slow is not None:
                verdict = Verdict(verdict.outcome, slow, verdict.quota_dim, verdict.retry_s)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return variant, verdict

    def rng_for(self, model: str) -> random.Random:
        return self.rngs.get(model) or random.Random()

    def record(self, **call) -> None:
        call["at"] = datetime.now(UTC).isoformat()
        with self.lock:
            self.calls.append(call)

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the providers' pooled clients reuse
    server_version = "SteadyshotSandbox/1"
    sandbox: Sandbox  # set on the subclass by make_server

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)

    # --- plumbing -------------------------------------------------------------------

    def _send(self, status: int, body, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if length > MAX_BODY:
            raise BadRequest("Request payload size exceeds the limit: 67108864 bytes.", 413)
        return self.rfile.read(length) if length else b""

    def _json(self):
        raw = self._body()
        try:
            return json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("Invalid JSON payload received.") from None

    def _serve(self, call: dict, started: float, answer):
        """Decide a call (profile or trigger), wait its latency, then send and log
        answer(variant, verdict) -> (status, body, headers)."""
        model = call["model"]
        variant, verdict = self.sandbox.decide(model, call["prompt"])
        try:
            time.sleep(verdict.latency_s * self.sandbox.clock.scale)
            if variant == "disconnect":
                return self._hang_up(call, started)
            status, body, headers = answer(variant, verdict)
        finally:
            self.sandbox.done()
        outcome = OUTCOME_OF.get(variant, variant)
        return self._finish(call, started, status, body, outcome, variant, headers)

    def _hang_up(self, call, started):
        """`disconnect`: close the connection with no answer at all (a proxy or the
        provider dropping it mid-call); logged with status 0."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.sandbox.record(
            **call, outcome="disconnect", status=0, variant="disconnect",
            latency_ms=int((time.monotonic() - started) * 1000),
        )  # fmt: skip

    def _finish(self, call, started, status, body, outcome, variant="", headers=None):
        self._send(status, body, headers)
        self.sandbox.record(
            **call, outcome=outcome, status=status, variant=variant,
            latency_ms=int((time.monotonic() - started) * 1000),
        )  # fmt: skip

    # --- routes ---------------------------------------------------------------------

    def do_GET(self):
        path = urlsplit(self.path).path
        sandbox = self.sandbox
        # A client may send a body with a GET (the SDK sends "{}"): read it, or it would
        # be taken for the next request on this kept-alive connection.
        self._body()
        if path == "/_sandbox/health":
            profile = sandbox.profile
            return self._send(
                200, {"ok": True, "profile": profile.name, "description": profile.description}
            )
        if path == "/_sandbox/state":
            return self._send(200, sandbox.state())
        if path == "/_sandbox/calls":
            return self._send(200, sandbox.call_log())
        if path == "/_sandbox/batches":
            return self._send(200, sandbox.batches.summary())
        if self._key_missing():
            return None
        match = re.fullmatch(r"/(?:v1|v1beta)/batches/([^/:]+)", path)
        if match:
            return self._send(*sandbox.batches.get(match[1]))
        if re.fullmatch(r"/(?:v1|v1beta)/batches", path):
            query = parse_qs(urlsplit(self.path).query)
            size = (query.get("pageSize") or ["50"])[0]
            token = (query.get("pageToken") or [""])[0]
            return self._send(*sandbox.batches.listing(int(size) if size.isdigit() else 50, token))
        match = re.fullmatch(r"/(?:download/)?(?:v1|v1beta)/(files/[^/:]+):download", path)
        if match:
            data = sandbox.batches.download(match[1])
            if data is None:
                return self._send(404, _google_error(404, "NOT_FOUND", f"{match[1]} not found."))
            self.send_response(200)
            self.send_header("Content-Type", "application/jsonl")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        return self._send(404, _google_error(404, "NOT_FOUND", f"No route for GET {path}."))

    def do_DELETE(self):
        path = urlsplit(self.path).path
        self._body()
        if self._key_missing():
            return None
        match = re.fullmatch(r"/(?:v1|v1beta)/batches/([^/:]+)", path)
        if match:
            return self._send(*self.sandbox.batches.delete(match[1]))
        return self._send(404, _google_error(404, "NOT_FOUND", f"No route for DELETE {path}."))

    def _key_missing(self) -> bool:
        """Answer 403 (True) when a Gemini API call carries no key, as Google does."""
        query = parse_qs(urlsplit(self.path).query)
        if self.headers.get("x-goog-api-key") or (query.get("key") or [""])[0]:
            return False
        if self.command == "POST":
            self._body()
        self._send(403, _google_error(
            403, "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established "
            "identity). Please use API Key or other form of API consumer identity to call this API.",
        ))  # fmt: skip
        return True

    def do_POST(self):
        path = urlsplit(self.path).path
        try:
            if path.startswith("/_sandbox/"):
                return self._admin(path)
            match = re.fullmatch(r"/(v1|v1beta)/models/([^/:]+):generateContent", path)
            if match:
                return self._gemini(match[1], match[2])
            if self._batch_route(path):
                return None
            if path == "/v1/images/generations":
                return self._openai()
            if path == "/v1/chat/completions":
                return self._openai_chat()
            self._body()
            return self._send(404, _google_error(404, "NOT_FOUND", f"No route for POST {path}."))
        except BadRequest as exc:
            if path.startswith("/v1/images") or path == "/v1/chat/completions":
                return self._send(
                    exc.status, _openai_error(exc.message, "invalid_request_error", None)
                )
            status = "INVALID_ARGUMENT" if exc.status == 400 else "FAILED_PRECONDITION"
            return self._send(exc.status, _google_error(exc.status, status, exc.message))

    def _admin(self, path: str):
        sandbox = self.sandbox
        data = self._json()
        if not isinstance(data, dict):
            raise BadRequest("Send a JSON object.")
        try:
            if path == "/_sandbox/profile":
                if "name" not in data:
                    raise BadRequest('Send {"name": <profile>, "seed": <int, optional>}.')
                sandbox.set_profile(str(data["name"]), data.get("seed"))
            elif path == "/_sandbox/reset":
                sandbox.reset()
            elif path == "/_sandbox/time-scale":
                scale = data.get("scale")
                if isinstance(scale, bool):
                    raise ProfileError("The time scale must be a number above 0")
                sandbox.set_time_scale(scale)
            elif path == "/_sandbox/relay-shape":
                sandbox.set_relay_shape(data.get("shape"))
            else:
                return self._send(404, {"error": f"No admin endpoint {path}"})
        except ProfileError as exc:
            raise BadRequest(str(exc)) from None
        return self._send(200, sandbox.state())

    # --- Batch mode and files (batches.py) --------------------------------------------

    def _batch_route(self, path: str) -> bool:
        """Answer a Batch mode or Files API POST; False if `path` is neither."""
        batches = self.sandbox.batches
        create = re.fullmatch(r"/(v1|v1beta)/models/([^/:]+):batchGenerateContent", path)
        cancel = re.fullmatch(r"/(?:v1|v1beta)/batches/([^/:]+):cancel", path)
        upload = re.fullmatch(r"/upload/(?:v1|v1beta)/files", path)
        if not (create or cancel or upload):
            return False
        # An upload session's URL is its own credential, as Google's is: no key needed.
        session = upload and "upload_id=" in urlsplit(self.path).query
        if not session and self._key_missing():
            pass
        elif create:
            data = self._json()
            if self.sandbox.models.get(create[2]) != "gemini":
                self._send(404, _not_found(create[2], create[1]))
            else:
                self._send(*batches.create(create[2], data))
        elif cancel:
            self._body()
            self._send(*batches.cancel(cancel[1]))
        else:
            self._upload(path)
        return True

    def _upload(self, path: str) -> None:
        """The Files API's resumable upload: a start, then chunks, the last finalizing."""
        batches = self.sandbox.batches
        query = parse_qs(urlsplit(self.path).query)
        upload_id = (query.get("upload_id") or [""])[0]
        if not upload_id:
            started = batches.upload_start(
                self._json(),
                self.headers.get("X-Goog-Upload-Header-Content-Length", ""),
                self.headers.get("X-Goog-Upload-Header-Content-Type", ""),
            )
            url = f"http://{self.headers.get('Host')}{path}?upload_id={started}&upload_protocol=resumable"
            self._send(200, {}, {"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"})
            return
        stored = batches.upload_chunk(
            upload_id,
            self.headers.get("X-Goog-Upload-Offset", ""),
            self._body(),
            "finalize" in self.headers.get("X-Goog-Upload-Command", ""),
        )
        if stored is None:
            self._send(200, {}, {"X-Goog-Upload-Status": "active"})
        else:
            self._send(200, {"file": stored}, {"X-Goog-Upload-Status": "final"})

    # --- Gemini ---------------------------------------------------------------------

    def _gemini(self, version: str, model: str):
        started = time.monotonic()
        query = parse_qs(urlsplit(self.path).query)
        key = self.headers.get("x-goog-api-key") or (query.get("key") or [""])[0]
        data = self._json()
        call = {
            "model": model,
            "protocol": "gemini",
            "prompt": "",
            "image_size": None,
            "aspect_ratio": None,
        }
        if not key:
            return self._finish(call, started, 403, _google_error(
                403, "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call this API.",
            ), "auth")  # fmt: skip
        if self.sandbox.models.get(model) != "gemini":
            return self._finish(call, started, 404, _not_found(model, version), "not_found")
        deadline = self.headers.get("X-Server-Timeout")
        if deadline and deadline.isdigit() and int(deadline) < 10:
            raise BadRequest(
                f"Manually set deadline {deadline}s is too short. Minimum allowed deadline is 10s."
            )
        prompt, references, ratio, size = _parse_gemini(data)
        call.update(prompt=prompt, image_size=size, aspect_ratio=ratio, references=len(references))

        def answer(variant, verdict):
            status, body = self._gemini_answer(
                variant, verdict, model, version, prompt, references, ratio, size
            )
            return status, body, None

        return self._serve(call, started, answer)

    def _gemini_answer(self, variant, verdict, model, version, prompt, references, ratio, size):
        scale = self.sandbox.clock.scale
        rng = self.sandbox.rng_for(model)
        response_id = secrets.token_urlsafe(16)
        if variant == "success":
            return 200, _gemini_image(
                model, prompt, references, ratio, size, self.sandbox.seed, response_id
            )
        if variant == "blocked":
            # Pro refuses the generated image, Flash the prompt: both shapes are real.
            if painter.is_pro(model):
                body = {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]}
            else:
                body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
            usage = {
                "promptTokenCount": len(prompt.split()),
                "totalTokenCount": len(prompt.split()),
            }
            return 200, {
                **body,
                "usageMetadata": usage,
                "modelVersion": model,
                "responseId": response_id,
            }
        if variant == "no_image":
            return 200, {
                "candidates": [{
                    "content": {"role": "model", "parts": [{"text": "I can describe it instead: " + prompt[:200]}]},
                    "finishReason": "STOP", "index": 0,
                }],
                "modelVersion": model, "responseId": response_id,
            }  # fmt: skip
        if variant == "malformed":
            return (
                200,
                b'{"candidates": [{"content": {"role": "model", "parts": [{"inlineData": {"mimeT',
            )
        if variant == "garbage_image":
            part = {"inlineData": {"mimeType": "image/png", "data": GARBAGE_PNG}}
            return 200, {
                "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}],
                "modelVersion": model, "responseId": response_id,
            }  # fmt: skip
        if variant == "overloaded":
            return 503, _google_error(503, "UNAVAILABLE", rng.choice(OVERLOAD_MESSAGES))
        if variant in GEMINI_ERRORS:
            code, status, message = GEMINI_ERRORS[variant]
            return code, _google_error(code, status, message)
        if variant == "not_found":
            return 404, _not_found(model, version)
        if variant in ("rate_limited", "quota_day"):
            dim = verdict.quota_dim or ("rpd" if variant == "quota_day" else "rpm")
            wait = verdict.retry_s or (
                rng.uniform(3600, 7200) if dim == "rpd" else rng.uniform(15, 60)
            )
            quota = self.sandbox.states[model].behaviour.quota
            # A forced 429 outside the quota profile still names a plausible limit: a
            # quotaValue of 0 would mean "no quota at all" (terminal) to the client.
            limit = (getattr(quota, dim, None) if quota else None) or FORCED_LIMITS[dim]
            return 429, _quota_error(model, dim, wait * scale, limit)
        raise AssertionError(f"unhandled variant {variant}")

    # --- OpenAI ---------------------------------------------------------------------

    def _openai_key_missing(self, call: dict, started: float) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip():
            return False
        self._finish(call, started, 401, _openai_error(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error", None,
        ), "auth")  # fmt: skip
        return True

    def _openai(self):
        started = time.monotonic()
        data = self._json()
        if not isinstance(data, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = str(data.get("model") or "")
        prompt = data.get("prompt")
        call = {"model": model, "protocol": "openai", "prompt": prompt if isinstance(prompt, str) else "",
                "image_size": data.get("size"), "aspect_ratio": None}  # fmt: skip
        if self._openai_key_missing(call, started):
            return None
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest("prompt is required and must be a non-empty string.")
        if model not in self.sandbox.models:
            return self._finish(call, started, 404, _openai_not_found(model), "not_found")
        size = data.get("size") or "1024x1024"
        if size != "auto" and size not in painter.OPENAI_SIZES:
            raise BadRequest(
                f"Invalid size {size!r}; supported: {sorted(painter.OPENAI_SIZES)} and auto."
            )
        n = data.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 10:
            raise BadRequest("n must be a whole number between 1 and 10.")
        return self._serve(
            call,
            started,
            lambda variant, verdict: self._openai_answer(variant, verdict, model, prompt, size, n),
        )

    def _openai_answer(self, variant, verdict, model, prompt, size, n):
        if variant == "success":
            w, h = (1024, 1024) if size == "auto" else (int(x) for x in size.split("x"))
            image = painter.paint(
                prompt, model=model, size=(w, h), seed=self.sandbox.seed, mime="image/png"
            )
            data = [{"b64_json": base64.b64encode(image).decode(), "revised_prompt": None}] * n
            return 200, {
                "created": int(time.time()), "data": data, "output_format": "png",
                "size": f"{w}x{h}", "quality": "high",
                "usage": {"input_tokens": len(prompt.split()), "output_tokens": 4160 * n,
                          "total_tokens": len(prompt.split()) + 4160 * n},
            }, {}  # fmt: skip
        if variant == "no_image":
            return 200, {"created": int(time.time()), "data": []}, {}
        if variant == "malformed":
            return 200, b'{"created": 1, "data": [{"b64_js', {}
        if variant == "garbage_image":
            data = [{"b64_json": GARBAGE_PNG, "revised_prompt": None}]
            return 200, {"created": int(time.time()), "data": data, "output_format": "png"}, {}
        return self._openai_failure(variant, verdict, model)

    def _openai_failure(self, variant, verdict, model):
        """The OpenAI-shaped error answers, which the Images API and relays share."""
        scale = self.sandbox.clock.scale
        rng = self.sandbox.rng_for(model)
        if variant in OPENAI_ERRORS:
            status, message, type_, code = OPENAI_ERRORS[variant]
            return status, _openai_error(message, type_, code), {}
        if variant == "not_found":
            return 404, _openai_not_found(model), {}
        if variant == "rate_limited":
            wait = (verdict.retry_s or rng.uniform(1, 20)) * scale
            return (
                429,
                _openai_error(
                    f"Rate limit reached for images per minute. Please try again in {wait:.3f}s.",
                    "requests",
                    "rate_limit_exceeded",
                ),
                {
                    "retry-after-ms": f"{wait * 1000:.0f}",
                    "retry-after": str(max(1, math.ceil(wait))),
                },
            )
        raise AssertionError(f"unhandled variant {variant}")

    # --- a relay's chat completions -------------------------------------------------

    def _openai_chat(self):
        started = time.monotonic()
        data = self._json()
        model = str(data.get("model") or "") if isinstance(data, dict) else ""
        call = {"model": model, "protocol": "openai-chat", "prompt": "",
                "image_size": None, "aspect_ratio": None}  # fmt: skip
        if self._openai_key_missing(call, started):
            return None
        prompt, references, ratio, size = _parse_chat(data)
        call.update(prompt=prompt, image_size=size, aspect_ratio=ratio, references=len(references))
        if model not in self.sandbox.models:
            return self._finish(call, started, 404, _openai_not_found(model), "not_found")
        shape = self.sandbox.relay_shape

        def answer(variant, verdict):
            if variant == "success":
                pixels = painter.pixel_size(model, ratio or "1:1", size)
                image = painter.paint(
                    prompt,
                    model=model,
                    size=pixels,
                    seed=self.sandbox.seed,
                    reference=references[0][0] if references else None,
                )
                uri = f"data:{painter.mime_for(model)};base64,{base64.b64encode(image).decode()}"
                usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 1290,
                         "total_tokens": len(prompt.split()) + 1290}  # fmt: skip
                return (
                    200,
                    _chat_completion(model, _chat_image_message(shape, uri), "stop", usage),
                    {},
                )
            if variant == "blocked":
                message = {"role": "assistant", "content": None}
                return 200, _chat_completion(model, message, "content_filter"), {}
            if variant == "no_image":
                message = {"role": "assistant", "content": "I can describe it, but not draw it."}
                return 200, _chat_completion(model, message, "stop"), {}
            if variant == "malformed":
                return 200, b'{"choices": [{"message": {"images": [{"image_u', {}
            if variant == "garbage_image":
                uri = f"data:image/png;base64,{GARBAGE_PNG}"
                return 200, _chat_completion(model, _chat_image_message(shape, uri), "stop"), {}
            return self._openai_failure(variant, verdict, model)

        return self._serve(call, started, answer)


# --- bodies -------------------------------------------------------------------------------


def _parse_chat(data) -> tuple[str, list[tuple[bytes, str]], str | None, str | None]:
    """(prompt, references, aspect ratio, image size) of a relay's chat completion body
    asking for an image (OpenRouter's `modalities` and `image_config`)."""
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages is required and must be a non-empty list.")
    texts, references = [], []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                raise BadRequest("Each content part must be an object.")
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                url = url if isinstance(url, str) else ""
                match = re.fullmatch(r"data:(image/(?:png|jpeg|webp));base64,(.+)", url, re.S)
                if match is None:
                    raise BadRequest("image_url must be a data: URI of a PNG, JPEG or WebP.")
                try:
                    references.append((base64.b64decode(match[2], validate=True), match[1]))
                except (ValueError, TypeError):
                    raise BadRequest("image_url's base64 data could not be decoded.") from None
    prompt = " ".join(texts).strip()
    if not prompt:
        raise BadRequest("The user message must hold some text.")
    modalities = data.get("modalities")
    if not isinstance(modalities, list) or "image" not in modalities:
        raise BadRequest('modalities must include "image" to get an image back.')
    config = data.get("image_config") or {}
    if not isinstance(config, dict):
        raise BadRequest("image_config must be an object.")
    ratio, size = config.get("aspect_ratio"), config.get("image_size")
    if ratio is not None and ratio not in ASPECT_RATIOS:
        raise BadRequest(
            f"Unsupported aspect_ratio {ratio!r}; supported: {', '.join(ASPECT_RATIOS)}."
        )
    if size is not None and size not in IMAGE_SIZES:
        raise BadRequest(f"Unsupported image_size {size!r}; use 1K, 2K or 4K.")
    return prompt, references, ratio, size


def _chat_completion(model: str, message: dict, finish: str, usage: dict | None = None) -> dict:
    return {
        "id": f"gen-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": usage or {},
    }


def _chat_image_message(shape: str, data_uri: str) -> dict:
    """The assistant's message carrying `data_uri` the way a relay of `shape` does."""
    text = "Here is the image you asked for."
    if shape == "parts":
        content = [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": data_uri}},
        ]
        return {"role": "assistant", "content": content}
    if shape == "markdown":
        return {"role": "assistant", "content": f"{text}\n\n![image]({data_uri})"}
    images = [{"type": "image_url", "index": 0, "image_url": {"url": data_uri, "detail": "auto"}}]
    return {"role": "assistant", "content": text, "images": images}


def _google_error(code: int, status: str, message: str, details: list | None = None) -> dict:
    error = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def _openai_error(message: str, type_: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _openai_not_found(model: str) -> dict:
    return _openai_error(
        f"The model '{model}' does not exist or you do not have access to it.",
        "invalid_request_error", "model_not_found",
    )  # fmt: skip


def _not_found(model: str, version: str) -> dict:
    return _google_error(
        404, "NOT_FOUND",
        f"models/{model} is not found for API version {version}, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    )  # fmt: skip


def _quota_error(model: str, dim: str, wait_s: float, limit: int | None) -> dict:
    delay = format_duration(wait_s)
    return _google_error(
        429, "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
        f"\n* Quota exceeded for metric: {QUOTA_METRICS[dim]}, limit: {limit if limit is not None else 0}, "
        f"model: {model}\nPlease retry in {delay}.",
        [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                "quotaMetric": QUOTA_METRICS[dim], "quotaId": QUOTA_IDS[dim],
                "quotaDimensions": {"location": "global", "model": model},
                "quotaValue": str(limit if limit is not None else 0),
            }]},
            {"@type": "type.googleapis.com/google.rpc.Help", "links": [{
                "description": "Learn more about Gemini API quotas",
                "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
            }]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
        ],
    )  # fmt: skip


def _parse_gemini(data) -> tuple[str, list[tuple[bytes, str]], str | None, str | None]:
    """(prompt, references, aspect ratio, image size) of a generateContent body, with
    Google's answers to the mistakes clients really make."""
    if not isinstance(data, dict):
        raise BadRequest("Invalid JSON payload received. Expected an object.")
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    texts, references = [], []
    for content in contents:
        if not isinstance(content, dict) or content.get("role", "user") != "user":
            continue
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                raise BadRequest("Invalid JSON payload received. A part must be an object.")
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            inline = part.get("inlineData") or part.get("inline_data")
            if isinstance(inline, dict):
                mime = inline.get("mimeType") or inline.get("mime_type") or ""
                if mime not in (
                    "image/png",
                    "image/jpeg",
                    "image/webp",
                    "image/heic",
                    "image/heif",
                ):
                    raise BadRequest(f"Unsupported MIME type: {mime}")
                try:
                    references.append(
                        (base64.b64decode(inline.get("data") or "", validate=True), mime)
                    )
                except (ValueError, TypeError):
                    raise BadRequest(
                        "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), Base64 decoding failed."
                    ) from None
    prompt = " ".join(texts).strip()
    if not prompt and not references:
        raise BadRequest(
            "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty."
        )
    config = data.get("generationConfig") or data.get("generation_config") or {}
    if not isinstance(config, dict):
        raise BadRequest("Invalid JSON payload received. generationConfig must be an object.")
    for misplaced in ("aspectRatio", "imageSize"):
        if misplaced in config:
            raise BadRequest(
                f'Invalid JSON payload received. Unknown name "{misplaced}" at '
                "'request.generation_config': Cannot find field."
            )
    image_config = config.get("imageConfig") or config.get("image_config") or {}
    ratio = image_config.get("aspectRatio") or image_config.get("aspect_ratio")
    size = image_config.get("imageSize") or image_config.get("image_size")
    if ratio is not None and ratio not in ASPECT_RATIOS:
        raise BadRequest(
            f"Unsupported aspect ratio: {ratio}. Supported: {', '.join(ASPECT_RATIOS)}."
        )
    if size is not None and size not in IMAGE_SIZES:
        raise BadRequest(f"Unsupported image size: {size}. Use 1K, 2K or 4K.")
    modalities = config.get("responseModalities") or config.get("response_modalities")
    if modalities is not None and "IMAGE" not in [str(m).upper() for m in modalities]:
        raise BadRequest("responseModalities must include IMAGE for an image model.")
    return prompt, references, ratio, size


def _gemini_image(model, prompt, references, ratio, size, seed, response_id) -> dict:
    pro = painter.is_pro(model)
    if ratio is None and references:
        # Google keeps the reference's ratio when none is asked; square is close enough.
        ratio = "1:1"
    pixels = painter.pixel_size(model, ratio, size)
    mime = painter.mime_for(model)
    image = painter.paint(
        prompt,
        model=model,
        size=pixels,
        seed=seed,
        reference=references[0][0] if references else None,
    )
    final = {"inlineData": {"mimeType": mime, "data": base64.b64encode(image).decode()}}
    prompt_tokens = len(prompt.split()) + (560 if pro else 258) * len(references)
    if pro:
        draft = painter.paint("(draft) " + prompt, model=model, size=(128, 128), seed=seed)
        parts = [
            {"text": "**Planning the composition**\nSketching the layout first.", "thought": True},
            {
                "inlineData": {"mimeType": mime, "data": base64.b64encode(draft).decode()},
                "thought": True,
            },
            {**final, "thoughtSignature": base64.b64encode(secrets.token_bytes(24)).decode()},
        ]
        image_tokens, thoughts = (2000 if size == "4K" else 1120), 210
    else:
        parts = [{"text": "Here is your image: "}, final]
        image_tokens, thoughts = 1290, 0
    usage = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": image_tokens + 10,
        "totalTokenCount": prompt_tokens + image_tokens + 10 + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": image_tokens}],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id,
    }


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # bursts of hundreds of concurrent calls in benchmarks
    allow_reuse_address = True


def make_server(sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    handler = type("BoundHandler", (Handler,), {"sandbox": sandbox})
    return SandboxServer((host, port), handler)
