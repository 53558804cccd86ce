"""Batch mode in the sandbox: `batchGenerateContent`, the batch operations and the Files
API uploads and downloads they use, as Google's Gemini API answers them (the official
google-genai SDK's `client.batches.create` / `get` / `cancel` / `list` work against it).

A batch lives on the sandbox's virtual clock, so TIME_SCALE compresses its hours: it is
PENDING for the profile's `pending_s`, RUNNING for `running_s`, then SUCCEEDED with one
answer per line (an image, a blocked or imageless response, or a line error), unless
it expires first (`expire_after_s`, 48 hours) or a word in one of its prompts decides
otherwise:
- `sandbox:batch_slow=<hours>`: it runs that long (an 11-hour batch);
- `sandbox:batch_expired[=<hours>]`: it expires, after 48 hours or that many;
- `sandbox:batch_failed`: it ends BATCH_STATE_FAILED, with no answers;
- any call trigger (`sandbox:blocked`, `sandbox:overloaded`, …): that line's answer, a
  partial failure of an otherwise successful batch.
Each answered line is logged in /_sandbox/calls with protocol "gemini-batch".
"""

import base64
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

STATE_NAMES = {
    "pending": "BATCH_STATE_PENDING",
    "running": "BATCH_STATE_RUNNING",
    "succeeded": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "cancelled": "BATCH_STATE_CANCELLED",
    "expired": "BATCH_STATE_EXPIRED",
}
FINAL = ("succeeded", "failed", "cancelled", "expired")
# A direct call's HTTP error code as the google.rpc.Code a batch line carries.
HTTP_TO_GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 500: 13, 503: 14, 504: 4}
TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Line:
    key: str
    prompt: str
    references: list  # [(bytes, mime)]
    ratio: str | None
    size: str | None


@dataclass
class SandboxBatch:
    id: str
    model: str
    display_name: str
    lines: list[Line]
    from_file: bool
    created: datetime  # wall clock, for the answers' timestamps
    runs_at: float  # virtual seconds
    ends_at: float
    fate: str  # succeeded | failed | expired
    state: str = "pending"
    ended: datetime | None = None
    answers: list[dict] | None = None  # once succeeded, in the lines' order
    stats: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"batches/{self.id}"


class BatchBook:
    """Every batch, uploaded file and upload session of one sandbox. Thread-safe.

    `wire` is the server module, whose helpers (errors, the generateContent parser and
    painter, the trigger words) build the answers: handed in by the server, so that this
    module does not import the one that imports it."""

    def __init__(self, sandbox, wire):
        self.sandbox = sandbox
        self.wire = wire
        self.lock = threading.Lock()
        self.batches: dict[str, SandboxBatch] = {}
        self.files: dict[str, dict] = {}  # "files/…" -> {"data", "mime", "displayName"}
        self.uploads: dict[str, dict] = {}

    def reset(self) -> None:
        with self.lock:
            self.batches.clear()
            self.files.clear()
            self.uploads.clear()

    # --- batches --------------------------------------------------------------------

    def create(self, model: str, data) -> tuple[int, dict]:
        """POST models/{model}:batchGenerateContent."""
        if not isinstance(data, dict) or not isinstance(data.get("batch"), dict):
            raise self.wire.BadRequest("Invalid JSON payload received. Expected a `batch` object.")
        batch = data["batch"]
        source = batch.get("inputConfig") or batch.get("input_config") or {}
        if not isinstance(source, dict):
            raise self.wire.BadRequest("batch.inputConfig must be an object.")
        if source.get("fileName") or source.get("file_name"):
            items, from_file = (
                self._file_lines(source.get("fileName") or source["file_name"]),
                True,
            )
        else:
            requests = (source.get("requests") or {}).get("requests")
            if not isinstance(requests, list) or not requests:
                raise self.wire.BadRequest(
                    "* BatchGenerateContentRequest.batch.input_config: requests or file_name "
                    "must be set, with at least one request."
                )
            items, from_file = requests, False
        lines = [self._line(item, index) for index, item in enumerate(items)]
        now = self.sandbox.clock.now()
        behaviour = self.sandbox.profile.batch
        rng = self.sandbox.rng_for(model)
        runs_at = now + rng.uniform(*behaviour.pending_s)
        ends_at = runs_at + rng.uniform(*behaviour.running_s)
        expires_at = now + behaviour.expire_after_s
        fate = "succeeded"
        for line in lines:
            for trigger in self.wire.parse_triggers(line.prompt):
                if trigger.variant == "batch_slow":
                    ends_at = runs_at + trigger.value * 3600
                elif trigger.variant == "batch_failed":
                    fate = "failed"
                elif trigger.variant == "batch_expired":
                    fate = "expired"
                    if trigger.value is not None:
                        expires_at = now + trigger.value * 3600
        if fate == "expired" or ends_at >= expires_at:
            fate, ends_at = "expired", expires_at
        found = SandboxBatch(
            id=secrets.token_hex(12),
            model=model,
            display_name=str(batch.get("displayName") or batch.get("display_name") or ""),
            lines=lines,
            from_file=from_file,
            created=datetime.now(UTC),
            runs_at=runs_at,
            ends_at=ends_at,
            fate=fate,
        )
        with self.lock:
            self.batches[found.id] = found
        return 200, self._operation(found)

    def _line(self, item, index: int) -> Line:
        if not isinstance(item, dict):
            raise self.wire.BadRequest(f"Request {index} must be an object.")
        request = item.get("request")
        if not isinstance(request, dict):
            raise self.wire.BadRequest(
                f"* batch.input_config.requests[{index}].request is required."
            )
        prompt, references, ratio, size = self.wire._parse_gemini(request)
        key = item.get("key") or (item.get("metadata") or {}).get("key") or ""
        return Line(str(key), prompt, references, ratio, size)

    def _file_lines(self, name: str) -> list:
        with self.lock:
            found = self.files.get(name)
        if found is None:
            raise self.wire.BadRequest(f"File {name} not found.", 404)
        items = []
        for number, text in enumerate(found["data"].decode().splitlines(), 1):
            if not text.strip():
                continue
            try:
                items.append(json.loads(text))
            except json.JSONDecodeError:
                raise self.wire.BadRequest(f"Line {number} of {name} is not JSON.") from None
        if not items:
            raise self.wire.BadRequest(f"File {name} holds no requests.")
        return items

    def get(self, batch_id: str) -> tuple[int, dict]:
        found = self._find(batch_id)
        if found is None:
            return 404, self.wire._google_error(
                404, "NOT_FOUND", f"Batch batches/{batch_id} not found."
            )
        return 200, self._operation(found)

    def listing(self, page_size: int, token: str) -> tuple[int, dict]:
        with self.lock:
            newest = sorted(self.batches.values(), key=lambda b: b.created, reverse=True)
        start = int(token) if token.isdigit() else 0
        page = newest[start : start + page_size]
        for batch in page:
            self._advance(batch)
        body: dict = {"operations": [self._operation(b) for b in page]}
        if start + page_size < len(newest):
            body["nextPageToken"] = str(start + page_size)
        return 200, body

    def cancel(self, batch_id: str) -> tuple[int, dict]:
        found = self._find(batch_id)
        if found is None:
            return 404, self.wire._google_error(
                404, "NOT_FOUND", f"Batch batches/{batch_id} not found."
            )
        with self.lock:
            if found.state not in FINAL:
                found.state, found.ended = "cancelled", datetime.now(UTC)
        return 200, {}

    def delete(self, batch_id: str) -> tuple[int, dict]:
        with self.lock:
            gone = self.batches.pop(batch_id, None)
        if gone is None:
            return 404, self.wire._google_error(
                404, "NOT_FOUND", f"Batch batches/{batch_id} not found."
            )
        return 200, {}

    def summary(self) -> list[dict]:
        """GET /_sandbox/batches: each batch's state and lines, newest first."""
        with self.lock:
            batches = sorted(self.batches.values(), key=lambda b: b.created, reverse=True)
        out = []
        for batch in batches:
            self._advance(batch)
            out.append(
                {
                    "name": batch.name,
                    "model": batch.model,
                    "display_name": batch.display_name,
                    "state": STATE_NAMES[batch.state],
                    "lines": len(batch.lines),
                    "from_file": batch.from_file,
                    "keys": [line.key for line in batch.lines],
                }
            )
        return out

    def _find(self, batch_id: str) -> SandboxBatch | None:
        with self.lock:
            found = self.batches.get(batch_id)
        if found is not None:
            self._advance(found)
        return found

    # --- time -----------------------------------------------------------------------

    def _advance(self, batch: SandboxBatch) -> None:
        """Move the batch to where the virtual clock says it is; answer its lines the
        first time it is seen succeeded."""
        with self.lock:
            if batch.state in FINAL:
                return
            now = self.sandbox.clock.now()
            if now < batch.runs_at:
                batch.state = "pending"
                return
            if now < batch.ends_at:
                batch.state = "running"
                return
            behind = timedelta(seconds=(now - batch.ends_at) * self.sandbox.clock.scale)
            batch.ended = datetime.now(UTC) - behind
            if batch.fate != "succeeded":
                batch.state = batch.fate
                return
        answers = [self._answer(batch, line) for line in batch.lines]
        with self.lock:
            if batch.state not in FINAL:
                batch.answers, batch.state = answers, "succeeded"

    def _answer(self, batch: SandboxBatch, line: Line) -> dict:
        """One line's answer: `{"response": …}` or `{"error": …}`, with its key."""
        sandbox = self.sandbox
        variant = self._line_variant(batch.model, line.prompt)
        rng = sandbox.rng_for(batch.model)
        answer: dict
        if variant == "success":
            answer = {
                "response": self.wire._gemini_image(
                    batch.model,
                    line.prompt,
                    line.references,
                    line.ratio,
                    line.size,
                    sandbox.seed,
                    secrets.token_urlsafe(16),
                )
            }
        elif variant == "blocked":
            answer = {"response": {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]}}
        elif variant == "no_image":
            text = {"text": "I can describe it instead: " + line.prompt[:200]}
            answer = {
                "response": {
                    "candidates": [
                        {"content": {"role": "model", "parts": [text]}, "finishReason": "STOP"}
                    ]
                }
            }
        elif variant == "malformed":
            part = {"inlineData": {"mimeType": "image/png", "data": "%%% not base64 %%%"}}
            answer = {"response": {"candidates": [{"content": {"parts": [part]}}]}}
        elif variant == "garbage_image":
            part = {"inlineData": {"mimeType": "image/png", "data": self.wire.GARBAGE_PNG}}
            answer = {"response": {"candidates": [{"content": {"parts": [part]}}]}}
        else:
            answer = {"error": self._line_error(batch.model, variant, rng)}
        answer["metadata"] = {"key": line.key}
        sandbox.record(
            model=batch.model,
            protocol="gemini-batch",
            prompt=line.prompt,
            image_size=line.size,
            aspect_ratio=line.ratio,
            outcome=self.wire.OUTCOME_OF.get(variant, variant),
            variant=variant,
            status=200,
            latency_ms=int((batch.ends_at - batch.runs_at) * sandbox.clock.scale * 1000),
            batch=batch.name,
        )
        return answer

    def _line_variant(self, model: str, prompt: str) -> str:
        """A call trigger in the prompt decides the line (counted like a call's, so
        `*1` fails one line or call only); otherwise the profile's line failures."""
        sandbox = self.sandbox
        with sandbox.lock:
            for trigger in self.wire.parse_triggers(prompt):
                # `slow` and `disconnect` act on calls only.
                if trigger.variant in (*self.wire.BATCH_VARIANTS, "slow", "disconnect"):
                    continue
                if trigger.model and trigger.model != model:
                    continue
                if trigger.times is not None:
                    counted = (prompt, trigger.token, model)
                    if sandbox.trigger_counts[counted] >= trigger.times:
                        continue
                    sandbox.trigger_counts[counted] += 1
                return trigger.variant
            rng = sandbox.rng_for(model)
            if rng.random() < sandbox.profile.batch.line_failure:
                return rng.choice(("overloaded", "server_error"))
        return "success"

    def _line_error(self, model: str, variant: str, rng) -> dict:
        """A google.rpc.Status, as Batch mode puts in a line that failed."""
        if variant == "overloaded":
            http, message, details = 503, rng.choice(self.wire.OVERLOAD_MESSAGES), None
        elif variant in self.wire.GEMINI_ERRORS:
            http, _, message = self.wire.GEMINI_ERRORS[variant]
            details = None
        elif variant == "not_found":
            http, message, details = (
                404,
                self.wire._not_found(model, "v1beta")["error"]["message"],
                None,
            )
        else:  # rate_limited, quota_day
            dim = "rpd" if variant == "quota_day" else "rpm"
            limit = self.wire.FORCED_LIMITS[dim]
            wait = rng.uniform(15, 60) * self.sandbox.clock.scale
            error = self.wire._quota_error(model, dim, wait, limit)["error"]
            http, message, details = 429, error["message"], error["details"]
        status = {"code": HTTP_TO_GRPC[http], "message": message}
        if details:
            status["details"] = details
        return status

    # --- answers --------------------------------------------------------------------

    def _operation(self, batch: SandboxBatch) -> dict:
        """The batch as a long-running operation: the batch in `metadata` (where the SDK
        reads it), `done` and the output in `response` once it ended."""
        total = len(batch.lines)
        answered = batch.answers or []
        failed = sum(1 for a in answered if "error" in a)
        stats = {"requestCount": str(total)}
        if batch.state == "succeeded":
            stats.update(
                successfulRequestCount=str(total - failed), failedRequestCount=str(failed)
            )
        elif batch.state in ("pending", "running"):
            stats["pendingRequestCount"] = str(total)
        meta = {
            "@type": TYPE + "GenerateContentBatch",
            "model": f"models/{batch.model}",
            "displayName": batch.display_name,
            "createTime": _rfc3339(batch.created),
            "updateTime": _rfc3339(batch.ended or batch.created),
            "batchStats": stats,
            "state": STATE_NAMES[batch.state],
            "name": batch.name,
        }
        operation: dict = {"name": batch.name, "metadata": meta}
        if batch.ended is not None:
            meta["endTime"] = _rfc3339(batch.ended)
        if batch.state in FINAL:
            operation["done"] = True
        if batch.state == "succeeded":
            output = self._output(batch)
            meta["output"] = output
            operation["response"] = {"@type": TYPE + "GenerateContentBatchOutput", **output}
        elif batch.state in ("failed", "expired"):
            message = (
                "The batch expired: it was pending or running for too long."
                if batch.state == "expired"
                else "The batch failed: an internal error occurred while processing it."
            )
            operation["error"] = {
                "code": 4 if batch.state == "expired" else 13,
                "message": message,
            }
        return operation

    def _output(self, batch: SandboxBatch) -> dict:
        """Inline answers for an inline batch; a JSONL file for a batch from a file."""
        if not batch.from_file:
            return {"inlinedResponses": {"inlinedResponses": batch.answers}}
        name = f"files/batch-{batch.id}"
        with self.lock:
            if name not in self.files:
                text = "\n".join(
                    json.dumps(
                        {
                            "key": a["metadata"]["key"],
                            **{k: v for k, v in a.items() if k != "metadata"},
                        }
                    )
                    for a in batch.answers or []
                )
                self.files[name] = {
                    "data": text.encode(),
                    "mime": "application/jsonl",
                    "displayName": name,
                }
        return {"responsesFile": name}

    # --- files ----------------------------------------------------------------------

    def upload_start(self, meta, size: str, mime: str) -> str:
        """The start of a resumable upload: its id (the upload URL carries it)."""
        if not size.isdigit():
            raise self.wire.BadRequest("X-Goog-Upload-Header-Content-Length is required.")
        upload_id = secrets.token_hex(12)
        file = (meta or {}).get("file") if isinstance(meta, dict) else None
        with self.lock:
            self.uploads[upload_id] = {
                "size": int(size),
                "mime": mime or "application/octet-stream",
                "displayName": str(
                    (file or {}).get("displayName") or (file or {}).get("display_name") or ""
                ),
                "data": b"",
            }
        return upload_id

    def upload_chunk(self, upload_id: str, offset: str, data: bytes, finalize: bool):
        """Append a chunk; on finalize the stored file's description, else None."""
        with self.lock:
            upload = self.uploads.get(upload_id)
            if upload is None:
                raise self.wire.BadRequest("No such upload session.", 404)
            if offset != str(len(upload["data"])):
                raise self.wire.BadRequest(
                    "X-Goog-Upload-Offset does not match the bytes received."
                )
            upload["data"] += data
            if not finalize:
                return None
            del self.uploads[upload_id]
            name = f"files/{secrets.token_hex(6)}"
            self.files[name] = upload
        now = _rfc3339(datetime.now(UTC))
        return {
            "name": name,
            "displayName": upload["displayName"],
            "mimeType": upload["mime"],
            "sizeBytes": str(len(upload["data"])),
            "createTime": now,
            "updateTime": now,
            "state": "ACTIVE",
            "source": "UPLOADED",
            "sha256Hash": base64.b64encode(secrets.token_bytes(32)).decode(),
        }

    def download(self, name: str) -> bytes | None:
        with self.lock:
            found = self.files.get(name)
        return None if found is None else found["data"]
