"""The sandbox as a separate process over HTTP: admin endpoints, validation, the
official SDKs, and the peak profile played over hundreds of real calls."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.support.sandbox import start_sandbox

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
BODY = {"contents": [{"role": "user", "parts": [{"text": "a lighthouse"}]}]}


@pytest.fixture
def fast(sandbox_settings, settings):
    settings.TIME_SCALE = 0.0001
    sandbox_settings.reset()
    return sandbox_settings


# One client for every call: building one per call (its SSL context and pool) costs more
# than the sandbox's answer.
CLIENT = httpx.Client()


def gemini(url, model=FLASH, body=BODY, version="v1beta", key="k"):
    return CLIENT.post(
        f"{url}/{version}/models/{model}:generateContent",
        json=body, headers={"x-goog-api-key": key} if key else {}, timeout=30,
    )  # fmt: skip


def test_it_admin_endpoints_switch_profile_and_scale_and_validate(fast):
    assert httpx.get(f"{fast.url}/_sandbox/health").json()["ok"] is True
    state = fast.set_profile("peak", seed=7)
    assert (state["profile"], state["seed"], state["time_scale"]) == ("peak", 7, 0.0001)
    bad = httpx.post(f"{fast.url}/_sandbox/profile", json={"name": "nope"})
    assert bad.status_code == 400 and "Unknown profile" in bad.text
    assert httpx.post(f"{fast.url}/_sandbox/time-scale", json={"scale": 0}).status_code == 400
    gemini(fast.url)
    assert len(fast.calls()) == 1
    fast.reset()
    assert fast.calls() == [] and fast.state()["profile"] == "calm"


def test_it_answers_both_api_versions_and_rejects_what_google_rejects(fast):
    assert gemini(fast.url, version="v1").status_code == 200
    assert gemini(fast.url, "gemini-9-imaginary").json()["error"]["status"] == "NOT_FOUND"
    assert gemini(fast.url, key="").status_code == 403
    misplaced = {**BODY, "generationConfig": {"aspectRatio": "16:9"}}
    assert "Unknown name" in gemini(fast.url, body=misplaced).json()["error"]["message"]
    odd = {**BODY, "generationConfig": {"imageConfig": {"aspectRatio": "7:3"}}}
    assert gemini(fast.url, body=odd).status_code == 400
    assert (
        httpx.post(
            f"{fast.url}/v1beta/models/{FLASH}:generateContent",
            content=b"{",
            headers={"x-goog-api-key": "k"},
        ).status_code
        == 400
    )
    calls = fast.calls()
    assert {c["outcome"] for c in calls} >= {"success", "not_found", "auth"}


def test_it_serves_many_slow_calls_at_once(fast, settings):
    """50 calls that each take 10 s are all in the server at the same moment (a slow
    machine only starts them later; they still overlap)."""
    settings.TIME_SCALE = 1.0
    fast.reset()
    body = {"contents": [{"parts": [{"text": "sandbox:slow=10 a lighthouse"}]}]}
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda _: gemini(fast.url, body=body).status_code, range(50)))
    assert statuses == [200] * 50
    assert fast.state()["max_in_flight"] == 50


@pytest.mark.slow
def test_it_peak_fails_pro_far_more_than_flash_over_real_calls(sandbox_settings, settings):
    """The profile's numbers are the unit tier's (test_sandbox_logic.py, on the pure
    model); here the server plays them over HTTP: Pro fails in episodes, Flash rarely."""
    settings.TIME_SCALE = 0.0002
    sandbox_settings.reset()
    sandbox_settings.set_profile("peak", seed=3)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: gemini(sandbox_settings.url, PRO if i % 2 else FLASH), range(600)))
    calls = sandbox_settings.calls()
    pro = [c for c in calls if c["model"] == PRO]
    flash = [c for c in calls if c["model"] == FLASH]
    assert len(pro) == len(flash) == 300
    pro_503 = sum(c["status"] == 503 for c in pro) / len(pro)
    flash_503 = sum(c["status"] == 503 for c in flash) / len(flash)
    assert 0.30 <= pro_503 <= 0.60, pro_503
    assert flash_503 < 0.15, flash_503


def test_it_the_google_genai_sdk_speaks_to_it(fast):
    genai = pytest.importorskip("google.genai")
    from google.genai import errors, types

    client = genai.Client(api_key="sdk-key", http_options=types.HttpOptions(base_url=fast.url))
    response = client.models.generate_content(
        model=PRO, contents="a lighthouse",
        config=types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="4:3")),
    )  # fmt: skip
    finals = [p for p in response.parts if p.inline_data and not p.thought]
    assert finals and finals[-1].inline_data.mime_type == "image/jpeg"
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=PRO, contents="sandbox:rate_limited x")
    assert info.value.code == 429
    details = info.value.details["error"]["details"]
    assert any(d["@type"].endswith("RetryInfo") for d in details)
    with pytest.raises(errors.ServerError) as info:
        client.models.generate_content(model=PRO, contents="sandbox:overloaded x")
    assert (info.value.code, info.value.status) == (503, "UNAVAILABLE")


def test_it_the_openai_sdk_speaks_to_it(fast):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="sdk-key", base_url=f"{fast.url}/v1", max_retries=0)
    result = client.images.generate(model="gpt-image-1", prompt="a lighthouse", size="1024x1024")
    assert result.data[0].b64_json
    with pytest.raises(openai.RateLimitError) as info:
        client.images.generate(model="gpt-image-1", prompt="sandbox:rate_limited x")
    assert info.value.response.headers["retry-after-ms"]
    with pytest.raises(openai.InternalServerError):
        client.images.generate(model="gpt-image-1", prompt="sandbox:overloaded x")


def test_it_answers_chat_completions_with_an_image_as_relays_do(fast):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="sdk-key", base_url=f"{fast.url}/v1", max_retries=0)
    result = client.chat.completions.create(
        model=FLASH,
        messages=[{"role": "user", "content": "a lighthouse"}],
        extra_body={"modalities": ["image", "text"]},
    )
    (image,) = result.choices[0].message.model_extra["images"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model=FLASH,
            messages=[{"role": "user", "content": "sandbox:overloaded x"}],
            extra_body={"modalities": ["image", "text"]},
        )
    text_only = CLIENT.post(
        f"{fast.url}/v1/chat/completions",
        json={"model": FLASH, "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": "Bearer k"},
    )
    assert text_only.status_code == 400
    assert "modalities" in text_only.json()["error"]["message"]
    bad_reference = CLIENT.post(
        f"{fast.url}/v1/chat/completions",
        json={
            "model": FLASH,
            "modalities": ["image"],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "x"}, {"type": "image_url", "image_url": 7},
            ]}],
        },
        headers={"Authorization": "Bearer k"},
    )  # fmt: skip
    assert bad_reference.status_code == 400
    assert "data: URI" in bad_reference.json()["error"]["message"]
    bad = httpx.post(f"{fast.url}/_sandbox/relay-shape", json={"shape": "html"})
    assert bad.status_code == 400 and "Unknown relay shape" in bad.text


def test_it_manage_py_sandbox_runs_as_its_own_process_with_its_options(tmp_path):
    process, url = start_sandbox(
        ["--profile", "outage", "--time-scale", "0.001", "--seed", "5"],
        env={"VAR_DIR": str(tmp_path)},
    )
    try:
        state = httpx.get(f"{url}/_sandbox/state").json()
        assert (state["profile"], state["time_scale"], state["seed"]) == ("outage", 0.001, 5)
        assert gemini(url, PRO).status_code == 503
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://127.0.0.1:8765", 8765),
        ("http://127.0.0.1:9001/", 9001),
        ("http://sandbox.internal", 80),
        ("https://sandbox.internal", 443),
    ],
)
def test_it_listens_on_the_port_the_app_calls_it_on(url, port):
    from generator.management.commands.sandbox import _port_of

    assert _port_of(url) == port
