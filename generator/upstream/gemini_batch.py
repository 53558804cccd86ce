"""Gemini's Batch mode (docs/upstream.md, "Batch mode"): many generateContent requests in
one batch, answered within 24 hours at half the price.

- `submit()`: `POST /v1beta/models/{model}:batchGenerateContent` with the lines inline
  (`batch.inputConfig.requests.requests[]`, each `{"request": …, "metadata": {"key": …}}`),
  or, above BATCH_INLINE_MAX_BYTES, as a JSONL file uploaded through the Files API
  (`batch.inputConfig.fileName`). The answer is a long-running operation named
  `batches/{id}`.
- `get()`: `GET /v1beta/batches/{id}`: the state (`BATCH_STATE_PENDING`, `_RUNNING`,
  `_SUCCEEDED`, `_FAILED`, `_CANCELLED`, `_EXPIRED`) and, once it succeeded, each line's
  answer read by its key (`inlinedResponses`, or the JSONL `responsesFile`), mapped to a
  GenerationResult or an UpstreamError in the taxonomy, like a direct call's.
- `find()`: the batch with our display name, for a submission whose answer was lost.
- `cancel()`: `POST /v1beta/batches/{id}:cancel`.

Shapes checked against the google-genai SDK's batches.py (`_BatchJob_from_mldev`: the
batch is the operation's `metadata`, its output `metadata.output`) and Google's Batch
mode reference; the sandbox speaks the same (generator/upstream/sandbox/batches.py).
"""

import json
import logging
from dataclasses import dataclass, field
from urllib.parse import quote

from generator.resilience.catalogue import ModelSpec
from generator.resilience.taxonomy import Outcome
from generator.upstream.base import GenerationCall, GenerationResult, UpstreamError
from generator.upstream.gemini import GeminiProvider
from generator.upstream.transport import (
    classify_status,
    error_envelope,
    error_from_response,
    json_or_none,
    rate_limit_details,
    rate_limited_fields,
    send,
)

log = logging.getLogger("steadyshot.batch")

STATES = {
    "BATCH_STATE_PENDING": "pending",
    "BATCH_STATE_RUNNING": "running",
    "BATCH_STATE_SUCCEEDED": "succeeded",
    "BATCH_STATE_FAILED": "failed",
    "BATCH_STATE_CANCELLED": "cancelled",
    "BATCH_STATE_EXPIRED": "expired",
}
# google.rpc.Code of a line's error, as the HTTP code the same error has on a direct
# call: one classification (transport.classify_status) for both.
GRPC_TO_HTTP = {
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    16: 401,  # UNAUTHENTICATED
}


@dataclass(frozen=True)
class BatchLine:
    key: str  # our request's id: how its answer is found again
    call: GenerationCall


@dataclass
class BatchStatus:
    name: str  # "batches/…"
    state: str  # pending, running, succeeded, failed, cancelled, expired
    display_name: str = ""
    error: str = ""  # the batch's own error (failed, expired)
    stats: dict = field(default_factory=dict)  # batchStats as sent
    # Once succeeded: each line's answer by key.
    results: dict[str, GenerationResult | UpstreamError] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled", "expired")


class GeminiBatchClient:
    """Batch mode for one Gemini endpoint and key (those of `provider`)."""

    def __init__(self, provider: GeminiProvider, *, inline_max_bytes: int = 20_000_000):
        self.provider = provider
        self.inline_max_bytes = inline_max_bytes

    @property
    def _version(self) -> str:
        return self.provider.api_version

    def _headers(self, **more) -> dict:
        return {"x-goog-api-key": self.provider.api_key, **more}

    def _exchange(self, spec: ModelSpec, method: str, path: str, **kwargs) -> dict:
        response, latency_ms = send(
            method,
            self.provider.base_url + path,
            spec=spec,
            redact=self.provider.redact,
            headers=kwargs.pop("headers", None) or self._headers(),
            **kwargs,
        )
        if not 200 <= response.status_code < 300:
            raise error_from_response(response, spec, latency_ms, self.provider.redact)
        body = json_or_none(response)
        if response.content and not isinstance(body, dict):
            raise UpstreamError(
                Outcome.MALFORMED,
                f"{spec.id}: the Batch mode answer is not a JSON object",
                http_status=response.status_code,
            )
        return body or {}

    # --- requests -------------------------------------------------------------------

    def line(self, line: BatchLine) -> dict:
        """One inline request: the generateContent body and our key."""
        return {"request": self.provider.request_body(line.call), "metadata": {"key": line.key}}

    def submit(self, spec: ModelSpec, lines: list[BatchLine], display_name: str) -> BatchStatus:
        """Create the batch; inline, or as a JSONL file when the lines are too large to
        be sent inline (Google's limit is 20 MB per request)."""
        inline = [self.line(line) for line in lines]
        size = len(json.dumps(inline))
        if size <= self.inline_max_bytes:
            source = {"requests": {"requests": inline}}
        else:
            jsonl = "\n".join(
                json.dumps({"key": item["metadata"]["key"], "request": item["request"]})
                for item in inline
            )
            source = {"fileName": self.upload(spec, jsonl.encode(), display_name)}
        body = {"batch": {"displayName": display_name, "inputConfig": source}}
        answer = self._exchange(
            spec,
            "POST",
            f"/{self._version}/models/{spec.id}:batchGenerateContent",
            json_body=body,
        )
        return self.status(spec, answer, lines)

    def upload(self, spec: ModelSpec, data: bytes, display_name: str) -> str:
        """Upload a JSONL file with the Files API's resumable protocol (start, then one
        upload-and-finalize); returns its name, "files/…"."""
        response, latency_ms = send(
            "POST",
            f"{self.provider.base_url}/upload/{self._version}/files",
            spec=spec,
            redact=self.provider.redact,
            headers=self._headers(
                **{
                    "X-Goog-Upload-Protocol": "resumable",
                    "X-Goog-Upload-Command": "start",
                    "X-Goog-Upload-Header-Content-Length": str(len(data)),
                    "X-Goog-Upload-Header-Content-Type": "application/jsonl",
                }
            ),
            json_body={"file": {"displayName": display_name}},
        )
        if response.status_code != 200 or not response.headers.get("x-goog-upload-url"):
            raise error_from_response(response, spec, latency_ms, self.provider.redact)
        response, latency_ms = send(
            "POST",
            response.headers["x-goog-upload-url"],
            spec=spec,
            redact=self.provider.redact,
            headers=self._headers(
                **{"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
            ),
            content=data,
        )
        answer = json_or_none(response) if response.status_code == 200 else None
        name = ((answer or {}).get("file") or {}).get("name") if isinstance(answer, dict) else None
        if not name:
            raise error_from_response(response, spec, latency_ms, self.provider.redact)
        return str(name)

    def get(self, spec: ModelSpec, name: str, lines: list[BatchLine]) -> BatchStatus:
        answer = self._exchange(spec, "GET", f"/{self._version}/{quote(name)}")
        return self.status(spec, answer, lines)

    def find(
        self, spec: ModelSpec, display_name: str, lines: list[BatchLine]
    ) -> BatchStatus | None:
        """The batch called `display_name`, newest first through the pages of
        `GET /batches`; None if the provider has none."""
        token = ""
        for _ in range(100):  # pages; a project holds far fewer recent batches
            query = "?pageSize=100" + (f"&pageToken={quote(token)}" if token else "")
            answer = self._exchange(spec, "GET", f"/{self._version}/batches{query}")
            for operation in answer.get("operations") or []:
                meta = operation.get("metadata") if isinstance(operation, dict) else None
                if isinstance(meta, dict) and meta.get("displayName") == display_name:
                    return self.status(spec, operation, lines)
            token = str(answer.get("nextPageToken") or "")
            if not token:
                return None
        return None

    def cancel(self, spec: ModelSpec, name: str) -> None:
        self._exchange(spec, "POST", f"/{self._version}/{quote(name)}:cancel", json_body={})

    # --- answers --------------------------------------------------------------------

    def status(self, spec: ModelSpec, operation: dict, lines: list[BatchLine]) -> BatchStatus:
        """A BatchStatus from an operation (`batches/…` with the batch in `metadata`)."""
        meta = operation.get("metadata") if isinstance(operation.get("metadata"), dict) else {}
        raw_state = str(meta.get("state") or "")
        state = STATES.get(raw_state) or STATES.get(raw_state.replace("JOB_", "BATCH_"))
        if state is None:
            log.warning("batch %s: unknown state %r; polling on", operation.get("name"), raw_state)
            state = "running"
        error = operation.get("error") or meta.get("error") or {}
        found = BatchStatus(
            name=str(operation.get("name") or meta.get("name") or ""),
            state=state,
            display_name=str(meta.get("displayName") or ""),
            error=str(error.get("message") or "") if isinstance(error, dict) else str(error),
            stats=meta.get("batchStats") if isinstance(meta.get("batchStats"), dict) else {},
        )
        if state == "succeeded":
            output = meta.get("output") or operation.get("response") or {}
            found.results = self.results(spec, output, lines)
        return found

    def results(
        self, spec: ModelSpec, output: dict, lines: list[BatchLine]
    ) -> dict[str, GenerationResult | UpstreamError]:
        """Each line's answer by its key. Google keeps the lines' order, so a line whose
        key did not come back is matched by its position."""
        items = (output.get("inlinedResponses") or {}).get("inlinedResponses")
        if items is None and output.get("responsesFile"):
            items = self.download(spec, str(output["responsesFile"]))
        by_key: dict[str, GenerationResult | UpstreamError] = {}
        calls = {line.key: line.call for line in lines}
        for index, item in enumerate(items or []):
            if not isinstance(item, dict):
                continue
            key = str(item.get("key") or (item.get("metadata") or {}).get("key") or "")
            if not key and index < len(lines):
                key = lines[index].key
            if key in calls:
                by_key[key] = self.line_answer(calls[key], item)
        return by_key

    def download(self, spec: ModelSpec, file_name: str) -> list[dict]:
        response, latency_ms = send(
            "GET",
            f"{self.provider.base_url}/download/{self._version}/{quote(file_name)}:download?alt=media",
            spec=spec,
            redact=self.provider.redact,
            headers=self._headers(),
        )
        if response.status_code != 200:
            raise error_from_response(response, spec, latency_ms, self.provider.redact)
        items = []
        for text in response.text.splitlines():
            if text.strip():
                try:
                    items.append(json.loads(text))
                except json.JSONDecodeError:
                    items.append({})  # a broken line: that request gets no answer
        return items

    def line_answer(self, call: GenerationCall, item: dict) -> GenerationResult | UpstreamError:
        """A line's answer as a direct call's would be: an image, or the error in the
        taxonomy (a blocked or imageless response included)."""
        if item.get("error"):
            return line_error(call.model, item["error"], self.provider.redact)
        response = item.get("response")
        if not isinstance(response, dict):
            return UpstreamError(
                Outcome.MALFORMED, f"{call.model.id}: the batch line has no answer"
            )
        try:
            return self.provider.parse_success(response, call, 0)
        except UpstreamError as exc:
            return exc


def line_error(spec: ModelSpec, error, redact=str) -> UpstreamError:
    """A batch line's `error` (a google.rpc.Status: a gRPC code, a message, details) in
    the taxonomy, through the HTTP code a direct call gets for the same error."""
    envelope = error_envelope({"error": error}) if not isinstance(error, dict) else error
    code = envelope.get("code")
    http = GRPC_TO_HTTP.get(code, 500) if isinstance(code, int) and code < 100 else code
    if not isinstance(http, int):
        http = 500
    outcome = classify_status(http, envelope)
    message = (
        f"{spec.id}: batch line {envelope.get('status') or code}: {envelope.get('message', '')}"
    )
    fields = {}
    if outcome == Outcome.RATE_LIMITED:
        # As on a direct call: a delay to wait out is a per-minute quota.
        fields = rate_limited_fields(envelope, *rate_limit_details(envelope))
    return UpstreamError(outcome, redact(message[:500]), http_status=http, **fields)
