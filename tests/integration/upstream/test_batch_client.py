"""Our Batch mode client (generator/upstream/gemini_batch.py) against the sandbox over
HTTP: each line's answer read by its key and mapped into the taxonomy, a large batch
sent as a JSONL file, a lost submission found again by its name, cancel."""

import time

import pytest

from generator.resilience.catalogue import get_catalogue
from generator.resilience.taxonomy import Outcome
from generator.upstream.base import GenerationCall, GenerationResult, UpstreamError
from generator.upstream.gemini_batch import BatchLine
from generator.upstream.registry import get_batch_client

PRO = "gemini-3-pro-image-preview"
GIVE_UP_S = 120


def lines(*prompts):
    spec = get_catalogue()[PRO]
    return [
        BatchLine(key=f"key-{n}", call=GenerationCall(model=spec, prompt=p, aspect_ratio="3:2"))
        for n, p in enumerate(prompts)
    ]


def until_final(client, status, sent):
    started = time.monotonic()
    while not status.is_final and time.monotonic() - started < GIVE_UP_S:
        time.sleep(0.05)
        status = client.get(get_catalogue()[PRO], status.name, sent)
    return status


def test_it_reads_each_line_by_its_key_into_the_taxonomy(fast):
    spec = get_catalogue()[PRO]
    client = get_batch_client(spec)
    sent = lines(
        "a lighthouse",
        "sandbox:blocked a fox",
        "sandbox:overloaded a storm",
        "sandbox:rate_limited a crowd",
        "sandbox:no_image a word",
    )

    status = until_final(client, client.submit(spec, sent, "steadyshot-test-1"), sent)

    assert status.state == "succeeded"
    results = status.results
    assert isinstance(results["key-0"], GenerationResult) and results["key-0"].mime == "image/jpeg"
    outcomes = {k: r.outcome for k, r in results.items() if isinstance(r, UpstreamError)}
    assert outcomes == {
        "key-1": Outcome.BLOCKED,
        "key-2": Outcome.OVERLOADED,
        "key-3": Outcome.RATE_LIMITED,
        "key-4": Outcome.NO_IMAGE,
    }
    assert results["key-3"].retry_after_s is not None


def test_it_a_batch_too_large_to_send_inline_goes_as_a_jsonl_file(fast, settings):
    settings.BATCH_INLINE_MAX_BYTES = 100
    spec = get_catalogue()[PRO]
    client = get_batch_client(spec)
    sent = lines("a boat", "a bay")

    status = until_final(client, client.submit(spec, sent, "steadyshot-test-2"), sent)

    assert status.state == "succeeded"
    assert all(isinstance(r, GenerationResult) for r in status.results.values())
    assert [b["from_file"] for b in fast.batches()] == [True]


def test_it_a_submission_is_found_again_by_its_display_name(fast):
    spec = get_catalogue()[PRO]
    client = get_batch_client(spec)
    sent = lines("a harbour")
    created = client.submit(spec, sent, "steadyshot-find-me")
    client.submit(spec, lines("another"), "steadyshot-someone-else")

    found = client.find(spec, "steadyshot-find-me", sent)

    assert found is not None and found.name == created.name
    assert client.find(spec, "steadyshot-never-sent", sent) is None


def test_it_a_cancelled_batch_reports_cancelled(fast):
    spec = get_catalogue()[PRO]
    client = get_batch_client(spec)
    sent = lines("sandbox:batch_slow=30 a long one")
    created = client.submit(spec, sent, "steadyshot-cancel")

    client.cancel(spec, created.name)

    assert client.get(spec, created.name, sent).state == "cancelled"


def test_it_an_unknown_batch_is_not_found(fast):
    spec = get_catalogue()[PRO]
    with pytest.raises(UpstreamError) as info:
        get_batch_client(spec).get(spec, "batches/nope", [])
    assert info.value.outcome == Outcome.NOT_FOUND
