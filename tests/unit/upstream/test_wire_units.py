"""The providers against the bodies Google and OpenAI send, one module at a time, with
httpx.MockTransport (no server): parsing and the taxonomy mapping."""

import base64
import io
import json
import os
from dataclasses import replace

import httpx
import pytest
from PIL import Image as PILImage

from generator.resilience.catalogue import DEFAULT_MODELS
from generator.resilience.taxonomy import Outcome
from generator.upstream import transport
from generator.upstream.base import GenerationCall, InputImage, UpstreamError
from generator.upstream.gemini import GeminiProvider
from generator.upstream.openai_chat import OpenAIChatProvider
from generator.upstream.openai_images import OpenAIImagesProvider, size_for
from generator.upstream.sandbox.server import GARBAGE_PNG
from tests.media import picture

PRO = DEFAULT_MODELS["gemini-3-pro-image-preview"]
FLASH = DEFAULT_MODELS["gemini-2.5-flash-image"]
GPT = DEFAULT_MODELS["gpt-image-1"]
KEY = "AIzaSy-secret-key-123456"
# Whole images: a provider decodes what it delivers (a header alone is MALFORMED).
PNG = picture("PNG")
JPEG = picture("JPEG")


@pytest.fixture
def mock_upstream():
    """mock_upstream(handler) -> base URL whose client answers with handler(request)."""
    bases = []

    def install(handler, suffix=""):
        base = f"http://mock-{len(bases)}.invalid{suffix}"
        bases.append(base)
        transport._clients[(os.getpid(), base)] = httpx.Client(
            transport=httpx.MockTransport(handler)
        )
        return base

    yield install
    for base in bases:
        transport._clients.pop((os.getpid(), base)).close()


def answer(status, body, headers=None):
    def handler(request):
        handler.requests.append(request)
        if isinstance(body, str | bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    handler.requests = []
    return handler


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def gemini_call(mock_upstream, status, body, *, spec=PRO, headers=None, **call):
    handler = answer(status, body, headers)
    provider = GeminiProvider(mock_upstream(handler), KEY)
    result = provider.generate(GenerationCall(model=spec, prompt="a red apple", **call))
    return result, handler


def gemini_error(mock_upstream, status, body, **kw) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        gemini_call(mock_upstream, status, body, **kw)
    assert KEY not in info.value.message
    return info.value


PRO_SUCCESS = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "**Planning the composition** ...", "thought": True},
                    {
                        "inlineData": {"mimeType": "image/jpeg", "data": b64(b"interim")},
                        "thought": True,
                    },
                    {
                        "inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)},
                        "thoughtSignature": "x",
                    },
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 12,
        "candidatesTokenCount": 1120,
        "thoughtsTokenCount": 210,
    },
    "modelVersion": "gemini-3-pro-image-preview",
    "responseId": "abc",
}


def test_it_sends_the_documented_request(mock_upstream):
    _, handler = gemini_call(
        mock_upstream, 200, PRO_SUCCESS, aspect_ratio="16:9", image_size="2K",
        references=(InputImage(PNG, "image/png"),),
    )  # fmt: skip
    (request,) = handler.requests
    assert request.url.path == "/v1beta/models/gemini-3-pro-image-preview:generateContent"
    assert request.headers["x-goog-api-key"] == KEY
    body = json.loads(request.content)
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}}
    assert parts[1] == {"text": "a red apple"}
    assert body["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
    }


def test_it_sends_no_image_size_to_a_1k_only_model(mock_upstream):
    flash_ok = json.loads(json.dumps(PRO_SUCCESS).replace("image/jpeg", "image/png"))
    _, handler = gemini_call(
        mock_upstream, 200, flash_ok, spec=FLASH, image_size="1K", aspect_ratio="1:1"
    )
    body = json.loads(handler.requests[0].content)
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1"}


def test_it_skips_thought_parts_and_keeps_usage_and_version(mock_upstream):
    result, _ = gemini_call(mock_upstream, 200, PRO_SUCCESS)
    assert result.data == JPEG
    assert result.mime == "image/jpeg"
    assert result.model_version == "gemini-3-pro-image-preview"
    assert result.usage["thoughtsTokenCount"] == 210
    assert result.text == ""


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}, "PROHIBITED_CONTENT"),
        ({"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]}, "IMAGE_SAFETY"),
        (
            {"candidates": [{"finishReason": "IMAGE_PROHIBITED_CONTENT"}]},
            "IMAGE_PROHIBITED_CONTENT",
        ),
    ],
)
def test_it_reports_safety_refusals_as_blocked(mock_upstream, body, reason):
    error = gemini_error(mock_upstream, 200, body)
    assert error.outcome == Outcome.BLOCKED
    assert error.block_reason == reason


@pytest.mark.parametrize(
    "body",
    [
        {
            "candidates": [
                {"content": {"parts": [{"text": "Here you go"}]}, "finishReason": "STOP"}
            ]
        },
        {"candidates": [{"finishReason": "NO_IMAGE"}]},
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {
                                "inlineData": {"mimeType": "image/png", "data": "eA=="},
                                "thought": True,
                            }
                        ]
                    }
                }
            ]
        },
    ],
)
def test_it_reports_a_200_without_a_final_image_as_no_image(mock_upstream, body):
    assert gemini_error(mock_upstream, 200, body).outcome == Outcome.NO_IMAGE


@pytest.mark.parametrize("body", ['{"candidates": [', "<html>oops</html>", [1, 2]])
def test_it_reports_unreadable_200_bodies_as_malformed(mock_upstream, body):
    assert gemini_error(mock_upstream, 200, body).outcome == Outcome.MALFORMED


def test_it_reports_an_image_that_only_looks_like_one_as_malformed(mock_upstream):
    # Issue 13, item 9: a valid PNG header over garbage was a success until the worker
    # failed to decode it, after the breaker had counted it.
    part = {"inlineData": {"mimeType": "image/png", "data": GARBAGE_PNG}}
    body = {"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]}
    error = gemini_error(mock_upstream, 200, body)
    assert error.outcome == Outcome.MALFORMED
    assert "not readable" in error.message
    body = {"created": 1, "data": [{"b64_json": GARBAGE_PNG}], "output_format": "png"}
    assert openai_error(mock_upstream, 200, body).outcome == Outcome.MALFORMED


def test_it_hands_the_worker_the_image_decoded_whole(mock_upstream):
    result, _ = gemini_call(mock_upstream, 200, PRO_SUCCESS)
    assert result.prepared is not None
    assert (result.prepared.mime, result.prepared.width, result.prepared.height) == (
        "image/jpeg",
        64,
        48,
    )
    # Its thumbnail too, made from the same pixels: the worker only stores it.
    with PILImage.open(io.BytesIO(result.prepared.thumbnail)) as thumbnail:
        assert thumbnail.format == "JPEG"


OVERLOADED = {
    "error": {
        "code": 503,
        "message": "The model is overloaded. Please try again later.",
        "status": "UNAVAILABLE",
    }
}
HIGH_DEMAND = {
    "error": {
        "code": 503,
        "message": "This model is currently experiencing high demand. Spikes in demand are usually temporary. Please try again later.",
        "status": "UNAVAILABLE",
    }
}
OUTAGE = {
    "error": {
        "code": 503,
        "message": "The service is currently unavailable.",
        "status": "UNAVAILABLE",
    }
}


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (503, OVERLOADED, Outcome.OVERLOADED),
        (503, HIGH_DEMAND, Outcome.OVERLOADED),
        (503, [OVERLOADED], Outcome.OVERLOADED),
        (503, OUTAGE, Outcome.UNAVAILABLE),
        (
            500,
            {
                "error": {
                    "code": 500,
                    "message": "Internal error encountered.",
                    "status": "INTERNAL",
                }
            },
            Outcome.SERVER_ERROR,
        ),
        (
            504,
            {
                "error": {
                    "code": 504,
                    "message": "Deadline expired before operation could complete.",
                    "status": "DEADLINE_EXCEEDED",
                }
            },
            Outcome.SERVER_ERROR,
        ),
        (502, "<html>Bad gateway</html>", Outcome.SERVER_ERROR),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "Invalid JSON payload received.",
                    "status": "INVALID_ARGUMENT",
                }
            },
            Outcome.BAD_REQUEST,
        ),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                        }
                    ],
                }
            },
            Outcome.AUTH,
        ),
        (
            403,
            {
                "error": {
                    "code": 403,
                    "message": "Your API key was reported as leaked.",
                    "status": "PERMISSION_DENIED",
                }
            },
            Outcome.AUTH,
        ),
        (
            404,
            {
                "error": {
                    "code": 404,
                    "message": "models/x is not found for API version v1beta",
                    "status": "NOT_FOUND",
                }
            },
            Outcome.NOT_FOUND,
        ),
    ],
)
def test_it_maps_error_bodies_to_the_taxonomy(mock_upstream, status, body, outcome):
    error = gemini_error(mock_upstream, status, body)
    assert error.outcome == outcome
    assert error.http_status == status


def quota_body(quota_id, delay, value="20"):
    return {"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED",
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/generate_requests", "quotaId": quota_id,
                 "quotaDimensions": {"location": "global", "model": "gemini-3-pro-image"}, "quotaValue": value}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
        ]}}  # fmt: skip


@pytest.mark.parametrize(
    ("quota_id", "delay", "value", "seconds", "scope"),
    [
        ("GenerateRequestsPerMinutePerProjectPerModel-PaidTier1", "19s", "20", 19.0, "minute"),
        (
            "GenerateRequestsPerMinutePerProjectPerModel",
            "45.837906927s",
            "20",
            45.837906927,
            "minute",
        ),
        ("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "3600s", "1500", 3600.0, "day"),
        ("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "2.5s", "0", 2.5, "day"),
    ],
)
def test_it_keeps_the_retry_delay_and_tells_minute_from_day_quotas(
    mock_upstream, quota_id, delay, value, seconds, scope
):
    error = gemini_error(mock_upstream, 429, quota_body(quota_id, delay, value))
    assert error.outcome == Outcome.RATE_LIMITED
    assert error.retry_after_s == pytest.approx(seconds)
    assert error.quota_id == quota_id
    assert error.quota_scope == scope


def test_it_reads_the_delay_from_the_message_when_retry_info_is_missing(mock_upstream):
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "Quota exceeded. Please retry in 47.434392449s.",
        }
    }
    assert gemini_error(mock_upstream, 429, body).retry_after_s == pytest.approx(47.434392449)


def test_it_never_puts_the_key_in_a_message_even_if_the_upstream_echoes_it(mock_upstream):
    body = {
        "error": {
            "code": 400,
            "message": f"API key {KEY} not valid.",
            "status": "INVALID_ARGUMENT",
        }
    }
    error = gemini_error(mock_upstream, 400, body)
    assert "[redacted]" in error.message
    assert KEY not in repr(GeminiProvider("http://x", KEY))


def test_it_reports_refused_connections_as_network(mock_upstream):
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    provider = GeminiProvider(mock_upstream(refuse), KEY)
    with pytest.raises(UpstreamError) as info:
        provider.generate(GenerationCall(model=PRO, prompt="x"))
    assert info.value.outcome == Outcome.NETWORK


# --- OpenAI-compatible ------------------------------------------------------------------


def openai_call(mock_upstream, status, body, headers=None, **call):
    handler = answer(status, body, headers)
    provider = OpenAIImagesProvider(mock_upstream(handler, "/v1"), KEY)
    return provider.generate(GenerationCall(model=GPT, prompt="a red apple", **call)), handler


def openai_error(mock_upstream, status, body, headers=None) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        openai_call(mock_upstream, status, body, headers)
    assert KEY not in info.value.message
    return info.value


def test_it_openai_sends_the_documented_request_and_reads_b64_json(mock_upstream):
    result, handler = openai_call(
        mock_upstream, 200, {"created": 1, "data": [{"b64_json": b64(PNG)}]}, aspect_ratio="16:9"
    )
    request = handler.requests[0]
    assert request.url.path == "/v1/images/generations"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "model": "gpt-image-1", "prompt": "a red apple", "n": 1, "size": "1536x1024",
        "response_format": "b64_json",
    }  # fmt: skip
    assert (result.data, result.mime) == (PNG, "image/png")


def test_it_openai_maps_ratios_to_sizes():
    assert [size_for(r) for r in (None, "1:1", "21:9", "9:16", "4:5")] == [
        "1024x1024", "1024x1024", "1536x1024", "1024x1536", "1024x1536",
    ]  # fmt: skip


def err(message, type_, code):
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "headers", "outcome", "retry_after", "scope"),
    [
        (
            429,
            err("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
            {"retry-after-ms": "494", "retry-after": "1"},
            Outcome.RATE_LIMITED,
            0.494,
            "minute",
        ),
        (
            429,
            err("Rate limit reached", "requests", "rate_limit_exceeded"),
            {"retry-after": "2.5"},
            Outcome.RATE_LIMITED,
            2.5,
            "minute",
        ),
        (
            429,
            err("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
            {},
            Outcome.RATE_LIMITED,
            None,
            "day",
        ),
        (
            503,
            err(
                "The engine is currently overloaded, please try again later", "server_error", None
            ),
            {},
            Outcome.OVERLOADED,
            None,
            "",
        ),
        (
            400,
            err(
                "Your request was rejected by the safety system.",
                "image_generation_user_error",
                "moderation_blocked",
            ),
            {},
            Outcome.BLOCKED,
            None,
            "",
        ),
        (
            401,
            err("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
            {},
            Outcome.AUTH,
            None,
            "",
        ),
        (
            404,
            err("The model does not exist", "invalid_request_error", "model_not_found"),
            {},
            Outcome.NOT_FOUND,
            None,
            "",
        ),
        (
            500,
            err("The server had an error while processing your request", "server_error", None),
            {},
            Outcome.SERVER_ERROR,
            None,
            "",
        ),
    ],
)
def test_it_openai_maps_errors_and_retry_headers(
    mock_upstream, status, body, headers, outcome, retry_after, scope
):
    error = openai_error(mock_upstream, status, body, headers)
    assert error.outcome == outcome
    assert error.retry_after_s == (pytest.approx(retry_after) if retry_after else None)
    assert error.quota_scope == scope


def test_it_openai_reports_an_empty_data_list_as_no_image(mock_upstream):
    assert openai_error(mock_upstream, 200, {"created": 1, "data": []}).outcome == Outcome.NO_IMAGE


@pytest.mark.parametrize(
    ("quota_id", "metric", "value", "limit"),
    [
        (
            "GenerateRequestsPerMinutePerProjectPerModel-PaidTier1",
            "generativelanguage.googleapis.com/generate_requests_per_model",
            "2",
            2,
        ),
        (
            "GenerateImagesPerMinutePerProjectPerModel-PaidTier1",
            "generativelanguage.googleapis.com/generate_images_per_model",
            "10",
            10,
        ),
        # A token quota counts something else than calls.
        (
            "GenerateContentPaidTierInputTokensPerModelPerMinute-PaidTier2",
            "generativelanguage.googleapis.com/generate_content_paid_tier_2_input_token_count",
            "3000000",
            None,
        ),
        ("GenerateRequestsPerMinutePerProjectPerModel", "", "lots", None),
        ("GenerateRequestsPerDayPerProjectPerModel-PaidTier1", "", "1000", None),
    ],
)
def test_it_passes_on_the_per_minute_call_quota_a_429_states(
    mock_upstream, quota_id, metric, value, limit
):
    body = quota_body(quota_id, "19s", value)
    body["error"]["details"][1]["violations"][0]["quotaMetric"] = metric
    error = gemini_error(mock_upstream, 429, body)
    assert error.quota_limit == limit
    assert error.retry_after_s == pytest.approx(19.0)


# --- A relay's chat completions ----------------------------------------------------------

RELAYED_PRO = replace(PRO, id="google/gemini-3-pro-image-preview", provider="openai-chat")


def chat_call(mock_upstream, status, body, headers=None, **call):
    handler = answer(status, body, headers)
    provider = OpenAIChatProvider(mock_upstream(handler, "/v1"), KEY)
    result = provider.generate(GenerationCall(model=RELAYED_PRO, prompt="a red apple", **call))
    return result, handler


def chat_error(mock_upstream, status, body, headers=None) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        chat_call(mock_upstream, status, body, headers)
    assert KEY not in info.value.message
    return info.value


def completion(message: dict, finish="stop") -> dict:
    return {
        "id": "gen-1",
        "model": "google/gemini-3-pro-image-preview",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1290},
    }


def data_uri(data: bytes, mime="image/jpeg") -> str:
    return f"data:{mime};base64,{b64(data)}"


def test_it_chat_sends_openrouters_request_with_the_references_as_data_uris(mock_upstream):
    message = {"role": "assistant", "content": "", "images": [
        {"type": "image_url", "image_url": {"url": data_uri(JPEG)}}
    ]}  # fmt: skip
    reference = InputImage(data=PNG, mime="image/png")
    _, handler = chat_call(
        mock_upstream, 200, completion(message), aspect_ratio="16:9", image_size="2K",
        references=(reference,),
    )  # fmt: skip
    request = handler.requests[0]
    assert request.url.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "model": "google/gemini-3-pro-image-preview",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a red apple"},
            {"type": "image_url", "image_url": {"url": data_uri(PNG, "image/png")}},
        ]}],
        "modalities": ["image", "text"],
        "stream": False,
        "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
    }  # fmt: skip


@pytest.mark.parametrize(
    "message",
    [
        # OpenRouter, Vercel's AI Gateway, LiteLLM: message.images[]
        {"role": "assistant", "content": "Here it is.", "images": [
            {"type": "image_url", "index": 0, "image_url": {"url": "", "detail": "auto"}}
        ]},
        # content parts, image_url and the {"type": "image"} variant
        {"role": "assistant", "content": [
            {"type": "text", "text": "Here it is."},
            {"type": "image_url", "image_url": {"url": ""}},
        ]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Here it is."},
            {"type": "image", "image": {"base64": "", "mime_type": "image/jpeg"}},
        ]},
        # one-api / new-api: a Markdown data URI in the text, wrapped over lines
        {"role": "assistant", "content": "Here it is.\n\n![image]()\nEnjoy."},
    ],
    ids=["images", "image_url part", "image part", "markdown"],
)  # fmt: skip
def test_it_chat_reads_the_image_wherever_a_relay_puts_it(mock_upstream, message):
    uri = data_uri(JPEG)
    encoded = json.dumps(message)
    wrapped = uri[:40] + "\n" + uri[40:]  # Markdown converters wrap long lines
    if "![image]()" in encoded:
        encoded = encoded.replace("![image]()", f"![image]({json.dumps(wrapped)[1:-1]})")
    else:
        encoded = encoded.replace('"url": ""', f'"url": "{uri}"')
        encoded = encoded.replace('"base64": ""', f'"base64": "{b64(JPEG)}"')
    result, _ = chat_call(mock_upstream, 200, completion(json.loads(encoded)))
    assert (result.data, result.mime) == (JPEG, "image/jpeg")
    assert result.prepared is not None and result.prepared.thumbnail
    assert result.text.startswith("Here it is.")
    assert "base64" not in result.text
    assert result.model_version == "google/gemini-3-pro-image-preview"


def test_it_chat_reports_a_content_filter_without_an_image_as_blocked(mock_upstream):
    error = chat_error(
        mock_upstream, 200, completion({"role": "assistant", "content": None}, "content_filter")
    )
    assert error.outcome == Outcome.BLOCKED
    assert "content_filter" in error.message


@pytest.mark.parametrize(
    ("body", "outcome", "says"),
    [
        ({"choices": []}, Outcome.NO_IMAGE, "no choices"),
        (completion({"role": "assistant", "content": "Sorry, only text."}), Outcome.NO_IMAGE,
         "no image in the answer"),
        (completion({"role": "assistant", "content": "![image](https://cdn.example/x.png)"}),
         Outcome.NO_IMAGE, "never fetched"),
        (completion({"role": "assistant", "images": [{"image_url": {"url": "data:image/png;base64,@@"}}]}),
         Outcome.MALFORMED, "not valid base64"),
        (completion({"role": "assistant", "images": [{"image_url": {"url": f"data:image/png;base64,{GARBAGE_PNG}"}}]}),
         Outcome.MALFORMED, "not readable"),
        (completion({"role": "assistant", "content": 5, "images": 5}), Outcome.NO_IMAGE,
         "no image in the answer"),
        ({"choices": ["text"]}, Outcome.MALFORMED, "not a list of objects"),
        ({"choices": [{"message": "text"}]}, Outcome.MALFORMED, "not an object"),
    ],
    ids=["no choices", "text only", "a link", "bad base64", "garbage image", "odd fields",
         "choices", "message"],
)  # fmt: skip
def test_it_chat_reports_answers_without_a_usable_image(mock_upstream, body, outcome, says):
    error = chat_error(mock_upstream, 200, body)
    assert error.outcome == outcome
    assert says in error.message


def test_it_chat_maps_openai_shaped_errors_like_the_images_api(mock_upstream):
    error = chat_error(
        mock_upstream, 429, err("Rate limit reached", "requests", "rate_limit_exceeded"),
        {"retry-after": "3"},
    )  # fmt: skip
    assert (error.outcome, error.retry_after_s) == (Outcome.RATE_LIMITED, 3.0)
