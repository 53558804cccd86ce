"""The Gemini `generateContent` protocol for image models (docs/upstream.md).

One call, one typed result or one UpstreamError; no retries (the policy decides).
"""

import base64
from functools import partial

from generator.resilience.taxonomy import Outcome
from generator.upstream.base import GenerationCall, GenerationResult, whole_image
from generator.upstream.transport import Redactor, answer_error, decode_image, post_json

# Finish and block reasons that mean "the safety filters refused": not retried, not
# downgraded. NO_IMAGE, IMAGE_OTHER, OTHER and a text-only STOP are "no image" instead.
BLOCK_REASONS = {
    "SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_RECITATION",
    "MODEL_ARMOR",
    "JAILBREAK",
}


class GeminiProvider:
    def __init__(self, base_url: str, api_key: str, api_version: str = "v1beta"):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.api_version = api_version.strip("/")
        self.redact = Redactor(api_key)

    def __repr__(self):  # never the key
        return f"GeminiProvider({self.base_url!r}, {self.api_version!r})"

    def request_body(self, call: GenerationCall) -> dict:
        # Reference images before the text, as Google's samples do.
        parts: list[dict] = [
            {"inlineData": {"mimeType": ref.mime, "data": base64.b64encode(ref.data).decode()}}
            for ref in call.references
        ]
        parts.append({"text": call.prompt})
        image_config: dict = {}
        if call.aspect_ratio:
            image_config["aspectRatio"] = call.aspect_ratio
        if size := call.image_size_to_send():
            image_config["imageSize"] = size
        config: dict = {"responseModalities": ["TEXT", "IMAGE"]}
        if image_config:
            config["imageConfig"] = image_config
        return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}

    def exchange(self, call: GenerationCall) -> dict:
        """Where and what to POST for `call` (post_json's, or agenerate's, arguments)."""
        return {
            "base_url": self.base_url,
            "path": f"/{self.api_version}/models/{call.model.id}:generateContent",
            "body": self.request_body(call),
            "headers": {"x-goog-api-key": self.api_key},
            "redact": self.redact,
        }

    def generate(self, call: GenerationCall) -> GenerationResult:
        body, latency_ms = post_json(**self.exchange(call), spec=call.model)
        return self.parse_success(body, call, latency_ms)

    def parse_success(self, body: dict, call: GenerationCall, latency_ms: int) -> GenerationResult:
        fail = partial(answer_error, call.model, latency_ms, self.redact)
        feedback = body.get("promptFeedback") or {}
        block = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if block:
            raise fail(Outcome.BLOCKED, f"prompt blocked ({block})", block_reason=str(block))
        candidates = body.get("candidates")
        if not candidates:
            raise fail(Outcome.NO_IMAGE, "the answer has no candidates")
        if not isinstance(candidates, list) or not isinstance(candidates[0], dict):
            raise fail(Outcome.MALFORMED, "candidates is not a list of objects")
        candidate = candidates[0]
        finish = str(candidate.get("finishReason") or "")
        if finish in BLOCK_REASONS:
            raise fail(Outcome.BLOCKED, f"image blocked ({finish})", block_reason=finish)
        parts = (candidate.get("content") or {}).get("parts") or []
        if not isinstance(parts, list):
            raise fail(Outcome.MALFORMED, "content.parts is not a list")
        image, texts = None, []
        for part in parts:
            # Gemini 3 Pro sends its "thinking" (text and up to two interim images) as
            # thought parts before the final image: never deliver those.
            if not isinstance(part, dict) or part.get("thought"):
                continue
            inline = part.get("inlineData") or part.get("inline_data")
            if isinstance(inline, dict):
                mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
                if mime.startswith("image/"):
                    image = (inline.get("data"), mime)
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
        if image is None:
            said = f" finishReason {finish}" if finish else ""
            raise fail(Outcome.NO_IMAGE, f"no image in the answer{said}")
        prepared = whole_image(decode_image(image[0], fail), fail)
        usage = body.get("usageMetadata")
        return GenerationResult(
            data=prepared.data,
            mime=prepared.mime,  # what the bytes are, whatever mimeType said
            latency_ms=latency_ms,
            model_version=str(body.get("modelVersion") or ""),
            usage=usage if isinstance(usage, dict) else {},
            text="\n".join(texts).strip(),
            prepared=prepared,
        )
