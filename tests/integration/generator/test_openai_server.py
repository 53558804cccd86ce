"""The OpenAI-compatible endpoint through the web server of `make run` (gunicorn with
uvicorn workers serving config.asgi), the official `openai` SDK and real workers: the
wire format, the 504 of a chain slower than the wait, and the waits holding no thread of
the server's pool."""

import base64
import concurrent.futures
import io
import json
import time

import httpx
import pytest
from PIL import Image as PILImage

from generator.models import GenerationRequest, Status
from tests.integration.generator.test_openai_api import PATH

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.1)


def test_it_serves_the_official_sdk_an_image_from_the_chain(start_web, workers, token):
    openai = pytest.importorskip("openai")
    web_server = start_web()
    workers.start(1)
    client = openai.OpenAI(api_key=token, base_url=f"{web_server.url}/v1", max_retries=0)
    result = client.images.generate(
        model="stability-first", prompt="a lighthouse at dusk", size="1536x1024"
    )
    assert len(result.data) == 1
    image = PILImage.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.width > image.height  # 1536x1024 is served at the nearest ratio, 3:2
    assert result.model == "gemini-2.5-flash-image"
    (row,) = GenerationRequest.objects.all()
    assert (row.status, row.aspect_ratio) == (Status.SUCCEEDED, "3:2")

    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="dall-e-3", prompt="a lighthouse")
    assert refused.value.code == "model_not_found"


def test_it_answers_504_naming_the_urls_to_poll_when_the_chain_is_slower(start_web, token):
    openai = pytest.importorskip("openai")
    # No worker runs: the request stays queued past the wait.
    web_server = start_web(OPENAI_COMPAT_WAIT_SECONDS="1")
    # The SDK as people use it: it calls again after a 5xx unless told not to.
    client = openai.OpenAI(api_key=token, base_url=f"{web_server.url}/v1")
    with pytest.raises(openai.APIStatusError) as slow:
        client.images.generate(prompt="a lighthouse")
    assert slow.value.status_code == 504
    (row,) = GenerationRequest.objects.all()  # one call, one request: no second one
    assert f"/api/v1/generations/{row.pk}" in slow.value.message
    assert row.status == Status.QUEUED  # still generated: nothing the caller paid is lost


def test_it_answers_a_prompt_the_upstream_refuses_once_with_a_400(start_web, workers, token):
    openai = pytest.importorskip("openai")
    web_server = start_web()
    workers.start(1)
    client = openai.OpenAI(api_key=token, base_url=f"{web_server.url}/v1")
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="stability-first", prompt="sandbox:bad_request a fox")
    assert refused.value.code == "bad_request"
    (row,) = GenerationRequest.objects.all()  # not called again by the SDK
    assert row.status == Status.FAILED


@pytest.mark.parametrize("path", [PATH, "/api/v1/generations"])
def test_it_answers_a_3_mb_body_with_a_json_413_through_the_server(start_web, token, path):
    response = httpx.post(
        start_web().url + path,
        content=json.dumps({"prompt": "x" * 3_000_000}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert "KiB" in response.json()["error"]["message"]


def test_it_keeps_serving_pages_while_calls_wait_for_the_chain(start_web, token):
    """The server's pool has WEB_THREADS=8 threads (its default): more waiting calls than
    that must not stop it from answering other requests, as they did when each waiting
    call held one of those threads."""
    web_server = start_web(OPENAI_COMPAT_WAIT_SECONDS="600")
    calls = 12
    headers = {"Authorization": f"Bearer {token}"}

    def wait_for_image():
        return httpx.post(
            f"{web_server.url}{PATH}",
            json={"prompt": "a lighthouse"},
            headers=headers,
            timeout=600,
        )

    with concurrent.futures.ThreadPoolExecutor(calls) as pool:
        waiting = [pool.submit(wait_for_image) for _ in range(calls)]
        # Every call is admitted and waits: no worker runs, so none can end.
        until(lambda: GenerationRequest.objects.count() == calls or any(f.done() for f in waiting))
        assert not any(f.done() for f in waiting), [f.result().text for f in waiting if f.done()]
        listed = httpx.get(f"{web_server.url}/api/v1/generations", headers=headers, timeout=60)
        health = httpx.get(f"{web_server.url}/healthz", timeout=60)
        assert (listed.status_code, health.status_code) == (200, 200)
        assert len(listed.json()["data"]) == calls
        assert not any(f.done() for f in waiting)  # answered while all were still waiting
        # Canceling ends each queued request at once; each call then answers.
        for row in GenerationRequest.objects.all():
            httpx.post(
                f"{web_server.url}/api/v1/generations/{row.pk}/cancel", headers=headers, timeout=60
            )
        answers = [f.result() for f in waiting]
    assert {a.status_code for a in answers} == {503}
    assert {a.json()["error"]["code"] for a in answers} == {"canceled"}
