"""The OpenAI Images API (`POST {base}/images/generations`, `b64_json`), as spoken by
OpenAI and by the relays that put other image models behind it (docs/upstream.md).

One call, one typed result or one UpstreamError; no retries (the policy decides).
"""

from fractions import Fraction
from functools import partial

from generator.resilience.taxonomy import Outcome
from generator.upstream.base import (
    GenerationCall,
    GenerationResult,
    UpstreamError,
    whole_image,
)
from generator.upstream.transport import Redactor, answer_error, decode_image, post_json

# The sizes GPT image models accept; a ratio maps to the closest orientation.
SQUARE, LANDSCAPE, PORTRAIT = "1024x1024", "1536x1024", "1024x1536"


def size_for(aspect_ratio: str | None) -> str:
    """`size` for an aspect ratio: square, landscape or portrait (the Images API has no
    free ratios for most models; 21:9 becomes the widest landscape it offers)."""
    if not aspect_ratio:
        return SQUARE
    width, height = (int(x) for x in aspect_ratio.split(":"))
    ratio = Fraction(width, height)
    if ratio > 1:
        return LANDSCAPE
    if ratio < 1:
        return PORTRAIT
    return SQUARE


class OpenAICompatible:
    """What the OpenAI-compatible routes share (this module's and openai_chat.py's): the
    endpoint, with /v1 like the OpenAI SDK's base URL, the Bearer key, one POST."""

    path = ""

    def __init__(self, base_url: str, api_key: str):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.redact = Redactor(api_key)

    def __repr__(self):  # never the key
        return f"{type(self).__name__}({self.base_url!r})"

    def request_body(self, call: GenerationCall) -> dict:
        raise NotImplementedError

    def parse_success(self, body: dict, call: GenerationCall, latency_ms: int) -> GenerationResult:
        raise NotImplementedError

    def exchange(self, call: GenerationCall) -> dict:
        """Where and what to POST for `call` (post_json's, or agenerate's, arguments)."""
        return {
            "base_url": self.base_url,
            "path": self.path,
            "body": self.request_body(call),
            "headers": {"Authorization": f"Bearer {self.api_key}"},
            "redact": self.redact,
        }

    def generate(self, call: GenerationCall) -> GenerationResult:
        body, latency_ms = post_json(**self.exchange(call), spec=call.model)
        return self.parse_success(body, call, latency_ms)


class OpenAIImagesProvider(OpenAICompatible):
    path = "/images/generations"

    def request_body(self, call: GenerationCall) -> dict:
        return {
            "model": call.model.id,
            "prompt": call.prompt,
            "n": 1,
            "size": size_for(call.aspect_ratio),
            "response_format": "b64_json",
        }

    def exchange(self, call: GenerationCall) -> dict:
        if call.references:
            raise UpstreamError(
                Outcome.BAD_REQUEST, f"{call.model.id}: this provider does not edit images"
            )
        return super().exchange(call)

    def parse_success(self, body: dict, call: GenerationCall, latency_ms: int) -> GenerationResult:
        spec = call.model
        fail = partial(answer_error, spec, latency_ms, self.redact)
        data = body.get("data")
        if not isinstance(data, list):
            raise fail(Outcome.MALFORMED, "the answer has no data list")
        # Relays answer a safety refusal with an empty data list (LiteLLM does).
        item = next((d for d in data if isinstance(d, dict) and d.get("b64_json")), None)
        if item is None:
            raise fail(Outcome.NO_IMAGE, "no b64_json image in the answer")
        prepared = whole_image(decode_image(item["b64_json"], fail), fail)
        usage = body.get("usage")
        return GenerationResult(
            data=prepared.data,
            mime=prepared.mime,
            latency_ms=latency_ms,
            model_version=spec.id,
            usage=usage if isinstance(usage, dict) else {},
            text=str(item.get("revised_prompt") or ""),
            prepared=prepared,
        )
