"""Gemini image models behind an OpenAI-compatible relay's chat completions
(`POST {base}/chat/completions`), the route OpenRouter, Vercel's AI Gateway and LiteLLM
give them (docs/wire.md §4.4, docs/upstream.md).

Relays agree on the request and not on where the image comes back, so every shape seen
is read, in this order:
1. `choices[0].message.images[]`, each `{"type": "image_url", "image_url": {"url":
   "data:image/png;base64,…"}}` (OpenRouter, Vercel, LiteLLM);
2. `message.content` as a list of parts, `{"type": "image_url", …}` or `{"type": "image",
   "image": {"base64": …}}`;
3. a Markdown image with a data URI inside `message.content`,
   `![image](data:image/png;base64,…)` (one-api / new-api converters).
Only inline images are taken: an answer that links to its image elsewhere is refused
as NO_IMAGE and never fetched (a relay's answer must not make the worker call an
arbitrary host). Errors are OpenAI-shaped and mapped by transport.py as for the Images
API. One call, one typed result or one UpstreamError; no retries (the policy decides).
"""

import base64
import re
from functools import partial

from generator.resilience.taxonomy import Outcome
from generator.upstream.base import GenerationCall, GenerationResult, whole_image
from generator.upstream.openai_images import OpenAICompatible
from generator.upstream.transport import answer_error, decode_image

# `![alt](data:image/png;base64,…)` (the base64 alphabet only, so a closing parenthesis
# or the text after it is never taken for data), or `![alt](https://…)`, a link.
MARKDOWN_IMAGE = re.compile(
    r"!\[[^\]]*\]\(\s*(data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=\s]+|https?://[^)\s]+)\s*\)"
)
DATA_URI = re.compile(r"^data:(image/[A-Za-z0-9.+-]+);base64,(.*)$", re.DOTALL)
# finish_reason of a refusal (OpenAI's word, which relays pass on) and Gemini's own,
# which OpenRouter forwards as native_finish_reason.
BLOCKED_FINISH = {"content_filter", "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST"}


class OpenAIChatProvider(OpenAICompatible):
    path = "/chat/completions"

    def request_body(self, call: GenerationCall) -> dict:
        content: list[dict] = [{"type": "text", "text": call.prompt}]
        content += [
            {
                "type": "image_url",
                "image_url": {
                    "url": f"data:{ref.mime};base64,{base64.b64encode(ref.data).decode()}"
                },
            }
            for ref in call.references
        ]
        image_config: dict = {}
        if call.aspect_ratio:
            image_config["aspect_ratio"] = call.aspect_ratio
        if size := call.image_size_to_send():
            image_config["image_size"] = size
        body: dict = {
            "model": call.model.id,
            "messages": [{"role": "user", "content": content}],
            "modalities": ["image", "text"],
            "stream": False,
        }
        if image_config:
            body["image_config"] = image_config
        return body

    def parse_success(self, body: dict, call: GenerationCall, latency_ms: int) -> GenerationResult:
        spec = call.model
        fail = partial(answer_error, spec, latency_ms, self.redact)
        choices = body.get("choices")
        if not choices:
            raise fail(Outcome.NO_IMAGE, "the answer has no choices")
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise fail(Outcome.MALFORMED, "choices is not a list of objects")
        choice = choices[0]
        finish = str(choice.get("native_finish_reason") or choice.get("finish_reason") or "")
        message = choice.get("message")
        if not isinstance(message, dict):
            raise fail(Outcome.MALFORMED, "choices[0].message is not an object")
        urls, text = _image_urls(message)
        inline = next((u for u in urls if u.startswith("data:")), None)
        if inline is None:
            if finish in BLOCKED_FINISH:
                raise fail(Outcome.BLOCKED, f"image blocked ({finish})", block_reason=finish)
            if urls:
                raise fail(
                    Outcome.NO_IMAGE,
                    "the answer links to its image instead of including it (only inline "
                    "data: images are accepted; links are never fetched)",
                )
            said = f" (finish_reason {finish})" if finish else ""
            raise fail(Outcome.NO_IMAGE, f"no image in the answer{said}")
        match = DATA_URI.match(inline)
        if match is None:
            raise fail(Outcome.MALFORMED, "the image is not a base64 data: URI")
        data = decode_image(re.sub(r"\s+", "", match[2]), fail)
        prepared = whole_image(data, fail)
        usage = body.get("usage")
        return GenerationResult(
            data=prepared.data,
            mime=prepared.mime,  # what the bytes are, whatever the URI said
            latency_ms=latency_ms,
            model_version=str(body.get("model") or spec.id),
            usage=usage if isinstance(usage, dict) else {},
            text=text,
            prepared=prepared,
        )


def _image_urls(message: dict) -> tuple[list[str], str]:
    """(the image URLs of a chat message, in the order of the module docstring; its
    text with any Markdown images left out)."""
    urls: list[str] = []
    images = message.get("images")
    for item in images if isinstance(images, list) else []:
        if isinstance(item, dict):
            urls.append(_url_of(item.get("image_url")))
    content = message.get("content")
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "image_url":
                urls.append(_url_of(part.get("image_url")))
            elif part.get("type") == "image" and isinstance(part.get("image"), dict):
                image = part["image"]
                if image.get("base64"):
                    mime = str(image.get("mime_type") or image.get("mimeType") or "image/png")
                    urls.append(f"data:{mime};base64,{image['base64']}")
                else:
                    urls.append(_url_of(image.get("url")))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    elif isinstance(content, str):
        urls += [m[1] for m in MARKDOWN_IMAGE.finditer(content)]
        texts.append(MARKDOWN_IMAGE.sub("", content))
    return [u for u in urls if u], " ".join(t.strip() for t in texts if t.strip())


def _url_of(value) -> str:
    """`{"url": …}` or a bare string, as relays write image_url."""
    if isinstance(value, dict):
        value = value.get("url")
    return value.strip() if isinstance(value, str) else ""
