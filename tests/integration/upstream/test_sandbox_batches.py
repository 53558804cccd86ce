"""The sandbox's Batch mode over HTTP, driven by the official google-genai SDK: batches
that take hours of virtual time, partial failures, expiry, cancel, and the Files API
round trip of a JSONL batch."""

import io
import json
import time

import httpx
import pytest

genai = pytest.importorskip("google.genai")
from google.genai import types  # noqa: E402

PRO = "gemini-3-pro-image-preview"
# Generous, and only a bound on waiting: the batches below end within a few seconds of
# real time at this scale on any machine.
GIVE_UP_S = 120


@pytest.fixture
def client(fast):
    return genai.Client(api_key="sdk-key", http_options=types.HttpOptions(base_url=fast.url))


def inline(prompt: str, key: str) -> dict:
    return {
        "contents": [{"parts": [{"text": prompt}], "role": "user"}],
        "config": {"response_modalities": ["IMAGE"], "image_config": {"aspect_ratio": "4:3"}},
        "metadata": {"key": key},
    }


def wait_until_done(client, name: str):
    started = time.monotonic()
    while time.monotonic() - started < GIVE_UP_S:
        job = client.batches.get(name=name)
        if job.state.name in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_EXPIRED", "JOB_STATE_CANCELLED"):  # fmt: skip
            return job
        time.sleep(0.05)
    raise AssertionError(f"{name} did not end")


def test_it_the_google_genai_sdk_runs_a_batch_to_its_answers(client, fast):
    job = client.batches.create(
        model=PRO,
        src=[inline("a lighthouse at dusk", "one"), inline("sandbox:blocked a fox", "two")],
        config={"display_name": "sdk-batch"},
    )
    assert job.name.startswith("batches/")
    assert job.state.name == "JOB_STATE_PENDING"

    done = wait_until_done(client, job.name)

    assert done.state.name == "JOB_STATE_SUCCEEDED"
    answers = done.dest.inlined_responses
    assert [a.metadata["key"] for a in answers] == ["one", "two"]
    image = [p for p in answers[0].response.parts if p.inline_data and not p.thought][-1]
    assert image.inline_data.mime_type == "image/jpeg" and len(image.inline_data.data) > 1000
    assert answers[1].response.candidates[0].finish_reason.name == "IMAGE_SAFETY"
    logged = [c for c in fast.calls() if c["protocol"] == "gemini-batch"]
    assert sorted(c["outcome"] for c in logged) == ["blocked", "success"]


def test_it_a_batch_takes_its_hours_of_virtual_time(client, fast):
    started = fast.state()["virtual_time_s"]
    job = client.batches.create(model=PRO, src=[inline("sandbox:batch_slow=11 a harbour", "k")])

    assert client.batches.get(name=job.name).state.name in (
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
    )
    done = wait_until_done(client, job.name)

    assert done.state.name == "JOB_STATE_SUCCEEDED"
    assert fast.state()["virtual_time_s"] - started >= 11 * 3600


def test_it_one_failed_line_leaves_the_others_answered(client):
    job = client.batches.create(
        model=PRO, src=[inline("a quiet bay", "ok"), inline("sandbox:overloaded a storm", "bad")]
    )

    done = wait_until_done(client, job.name)

    assert done.state.name == "JOB_STATE_SUCCEEDED"
    ok, bad = done.dest.inlined_responses
    assert ok.response.parts and ok.error is None
    assert bad.response is None and bad.error.code == 14  # UNAVAILABLE


def test_it_an_expired_or_failed_batch_ends_without_answers(client):
    expired = client.batches.create(model=PRO, src=[inline("sandbox:batch_expired=2 a", "a")])
    failed = client.batches.create(model=PRO, src=[inline("sandbox:batch_failed b", "b")])

    assert wait_until_done(client, expired.name).state.name == "JOB_STATE_EXPIRED"
    ended = wait_until_done(client, failed.name)
    assert ended.state.name == "JOB_STATE_FAILED"
    assert ended.dest is None


def test_it_a_cancelled_batch_stays_cancelled_and_is_listed(client):
    job = client.batches.create(
        model=PRO,
        src=[inline("sandbox:batch_slow=40 a slow one", "k")],
        config={"display_name": "to-cancel"},
    )

    client.batches.cancel(name=job.name)

    assert client.batches.get(name=job.name).state.name == "JOB_STATE_CANCELLED"
    listed = {b.display_name: b.state.name for b in client.batches.list()}
    assert listed["to-cancel"] == "JOB_STATE_CANCELLED"


def test_it_a_jsonl_batch_goes_through_the_files_api(client):
    lines = [
        {"key": f"k{n}", "request": {"contents": [{"parts": [{"text": f"a boat {n}"}]}]}}
        for n in range(3)
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    uploaded = client.files.upload(
        file=io.BytesIO(data), config={"mime_type": "jsonl", "display_name": "in"}
    )
    job = client.batches.create(model=PRO, src=uploaded.name)

    done = wait_until_done(client, job.name)

    assert done.state.name == "JOB_STATE_SUCCEEDED"
    answers = client.files.download(file=done.dest.file_name).decode().splitlines()
    assert [json.loads(a)["key"] for a in answers] == ["k0", "k1", "k2"]
    assert all("candidates" in json.loads(a)["response"] for a in answers)


def test_it_refuses_a_batch_without_requests_or_a_key(fast):
    url = f"{fast.url}/v1beta/models/{PRO}:batchGenerateContent"
    empty = {"batch": {"displayName": "x", "inputConfig": {"requests": {"requests": []}}}}
    assert httpx.post(url, json=empty, headers={"x-goog-api-key": "k"}).status_code == 400
    assert httpx.post(url, json=empty).status_code == 403
    unknown = url.replace(PRO, "gemini-9-imaginary")
    assert httpx.post(unknown, json=empty, headers={"x-goog-api-key": "k"}).status_code == 404
