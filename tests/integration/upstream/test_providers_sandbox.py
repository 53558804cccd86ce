"""The providers against the real sandbox over HTTP: every taxonomy class, as the
worker would see it."""

import io
import socket
from dataclasses import replace

import pytest
from PIL import Image

from generator.resilience.catalogue import DEFAULT_MODELS
from generator.resilience.taxonomy import Outcome
from generator.upstream.base import GenerationCall, InputImage, UpstreamError
from generator.upstream.registry import get_provider

PRO = DEFAULT_MODELS["gemini-3-pro-image-preview"]
FLASH = DEFAULT_MODELS["gemini-2.5-flash-image"]
GPT = DEFAULT_MODELS["gpt-image-1"]
# Nano Banana Pro behind an OpenAI-compatible relay's chat completions.
RELAYED = replace(PRO, provider="openai-chat")

pytestmark = pytest.mark.django_db(databases=[])


@pytest.fixture
def upstream(sandbox_settings, settings):
    settings.TIME_SCALE = 0.0005
    sandbox_settings.reset()
    return sandbox_settings


def generate(spec, prompt="a lighthouse at dusk", **kw):
    return get_provider(spec).generate(GenerationCall(model=spec, prompt=prompt, **kw))


def failure(spec, prompt, **kw) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        generate(spec, prompt, **kw)
    return info.value


def test_it_gets_a_jpeg_from_pro_at_the_asked_ratio_and_size(upstream):
    result = generate(PRO, aspect_ratio="16:9", image_size="2K")
    assert result.mime == "image/jpeg"
    image = Image.open(io.BytesIO(result.data))
    assert (image.format, image.size) == ("JPEG", (2752, 1536))
    assert result.model_version == PRO.id
    assert result.usage["thoughtsTokenCount"] > 0
    (call,) = upstream.calls()
    assert call["model"] == PRO.id and call["outcome"] == "success" and call["status"] == 200
    assert call["image_size"] == "2K" and call["aspect_ratio"] == "16:9"


def test_it_gets_a_png_from_flash_without_sending_it_an_image_size(upstream):
    result = generate(FLASH, aspect_ratio="1:1", image_size="1K")
    assert result.mime == "image/png"
    assert Image.open(io.BytesIO(result.data)).size == (1024, 1024)
    assert upstream.calls()[-1]["image_size"] is None


def test_it_sends_reference_images_for_an_edit(upstream):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buffer, "PNG")
    generate(FLASH, "make it red", references=(InputImage(buffer.getvalue(), "image/png"),))
    assert upstream.calls()[-1]["references"] == 1


def test_it_uses_the_configured_api_version(upstream, settings):
    settings.GEMINI_API_VERSION = "v1"
    assert generate(FLASH).mime == "image/png"


# OpenAI answers a safety refusal with a 400 and a missing key with a 401; a relay's
# chat completion refuses with a 200 whose finish_reason is content_filter.
OPENAI_STATUS = {"openai": {"blocked": 400, "auth": 401}, "openai-chat": {"auth": 401}}


@pytest.mark.parametrize(
    ("variant", "outcome", "status"),
    [
        ("blocked", Outcome.BLOCKED, 200),
        ("overloaded", Outcome.OVERLOADED, 503),
        ("unavailable", Outcome.UNAVAILABLE, 503),
        ("rate_limited", Outcome.RATE_LIMITED, 429),
        ("quota_day", Outcome.RATE_LIMITED, 429),
        ("server_error", Outcome.SERVER_ERROR, 500),
        ("no_image", Outcome.NO_IMAGE, 200),
        ("bad_request", Outcome.BAD_REQUEST, 400),
        ("auth", Outcome.AUTH, 403),
        ("not_found", Outcome.NOT_FOUND, 404),
        ("malformed", Outcome.MALFORMED, 200),
        ("garbage_image", Outcome.MALFORMED, 200),
    ],
)
@pytest.mark.parametrize(
    "spec", [PRO, FLASH, GPT, RELAYED], ids=["pro", "flash", "openai", "relay"]
)
def test_it_maps_every_forced_outcome(upstream, variant, outcome, status, spec):
    error = failure(spec, f"sandbox:{variant} a lighthouse")
    assert error.outcome == outcome
    status = OPENAI_STATUS.get(spec.provider, {}).get(variant, status)
    assert error.http_status == status
    assert upstream.calls()[-1]["outcome"] == outcome.value


def test_it_keeps_fractional_retry_delays_scaled_by_the_time_scale(upstream):
    error = failure(PRO, "sandbox:rate_limited x")
    assert error.quota_scope == "minute"
    assert error.quota_id.startswith("GenerateRequestsPerMinute")
    # 15-60 s announced, times the 0.0005 scale.
    assert 0.0075 <= error.retry_after_s <= 0.03
    assert error.retry_after_s != round(error.retry_after_s)


def test_it_tells_a_daily_quota_from_a_per_minute_one(upstream):
    error = failure(PRO, "sandbox:quota_day x")
    assert error.quota_scope == "day"
    assert "PerDay" in error.quota_id


def test_it_openai_reads_the_retry_headers(upstream):
    error = failure(GPT, "sandbox:rate_limited x")
    assert error.quota_scope == "minute"
    assert 0 < error.retry_after_s <= 0.02


def test_it_a_trigger_for_one_model_leaves_the_others_alone(upstream):
    prompt = f"sandbox:unavailable@{PRO.id} a lighthouse"
    assert failure(PRO, prompt).outcome == Outcome.UNAVAILABLE
    assert generate(FLASH, prompt).mime == "image/png"


def test_it_a_counted_trigger_applies_to_the_first_calls_only(upstream):
    prompt = "sandbox:overloaded*2 a lighthouse"
    assert failure(PRO, prompt).outcome == Outcome.OVERLOADED
    assert failure(PRO, prompt).outcome == Outcome.OVERLOADED
    assert generate(PRO, prompt).mime == "image/jpeg"


def test_it_reports_a_read_timeout(upstream, settings):
    settings.TIME_SCALE = 1.0
    upstream.reset()
    from dataclasses import replace

    impatient = replace(FLASH, read_timeout_s=0.3)
    error = failure(impatient, "sandbox:slow=2 a lighthouse")
    assert error.outcome == Outcome.TIMEOUT
    assert "read timeout" in error.message


def test_it_reports_a_connect_failure_as_network(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    settings.UPSTREAM_SANDBOX = True
    settings.SANDBOX_URL = f"http://127.0.0.1:{port}"
    assert failure(FLASH, "x").outcome == Outcome.NETWORK


def test_it_reports_a_connect_timeout(settings):
    from dataclasses import replace

    # A listener that never accepts, its backlog full: the next SYN goes unanswered.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        settings.UPSTREAM_SANDBOX = True
        settings.SANDBOX_URL = f"http://127.0.0.1:{port}"
        try:
            error = failure(replace(FLASH, connect_timeout_s=0.3), "x")
        finally:
            for filler in fillers:
                filler.close()
    assert error.outcome == Outcome.TIMEOUT
    assert "connect timeout" in error.message


def test_it_a_real_key_never_reaches_a_message(upstream, settings):
    key = "AIzaSy-very-secret-key-0123456789"
    settings.UPSTREAM_SANDBOX = False
    settings.GEMINI_BASE_URL = upstream.url
    settings.GEMINI_API_KEY = key
    for variant in ("auth", "bad_request", "overloaded", "rate_limited", "malformed", "blocked"):
        error = failure(PRO, f"sandbox:{variant} x")
        assert key not in error.message and key not in repr(error)


@pytest.mark.parametrize("spec", [PRO, GPT, RELAYED], ids=["gemini", "openai", "relay"])
def test_it_sees_a_connection_closed_without_an_answer_as_a_network_error(upstream, spec):
    error = failure(spec, "sandbox:disconnect*1 a lighthouse")
    assert error.outcome == Outcome.NETWORK
    assert upstream.calls()[-1]["outcome"] == "disconnect"
    assert generate(spec, "sandbox:disconnect*1 a lighthouse").mime.startswith("image/")


@pytest.mark.parametrize("shape", ["images", "parts", "markdown"])
def test_it_gets_pros_jpeg_through_a_relay_whatever_its_answers_shape(upstream, shape):
    assert upstream.set_relay_shape(shape)["relay_shape"] == shape
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buffer, "PNG")
    reference = InputImage(buffer.getvalue(), "image/png")
    result = generate(RELAYED, aspect_ratio="16:9", image_size="2K", references=(reference,))
    image = Image.open(io.BytesIO(result.data))
    assert (result.mime, image.format, image.size) == ("image/jpeg", "JPEG", (2752, 1536))
    assert result.prepared.thumbnail
    (call,) = upstream.calls()
    assert (call["protocol"], call["outcome"], call["status"]) == ("openai-chat", "success", 200)
    assert (call["aspect_ratio"], call["image_size"], call["references"]) == ("16:9", "2K", 1)


def test_it_forgets_the_relay_shape_on_reset(upstream):
    upstream.set_relay_shape("markdown")
    assert upstream.reset()["relay_shape"] == "images"
