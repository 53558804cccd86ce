"""Batch mode answers as Google sends them (no server): the operation's state and each
line's answer, found by its key and mapped into the taxonomy."""

import base64

from generator.resilience.catalogue import DEFAULT_MODELS
from generator.resilience.taxonomy import Outcome
from generator.upstream.base import GenerationCall, GenerationResult, UpstreamError
from generator.upstream.gemini import GeminiProvider
from generator.upstream.gemini_batch import BatchLine, GeminiBatchClient
from tests.media import picture

PRO = DEFAULT_MODELS["gemini-3-pro-image-preview"]
PNG = picture("PNG")  # whole: the provider decodes what it delivers
CLIENT = GeminiBatchClient(GeminiProvider("http://unused.invalid", "key-123456"))


def lines(*keys):
    return [BatchLine(k, GenerationCall(model=PRO, prompt=f"prompt {k}")) for k in keys]


def image_response():
    part = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}
    return {"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]}


def operation(state, output=None, **more):
    meta = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": f"models/{PRO.id}", "displayName": "steadyshot-x", "state": state,
            "batchStats": {"requestCount": "2", "pendingRequestCount": "2"}, "name": "batches/b1"}  # fmt: skip
    if output is not None:
        meta["output"] = output
    return {"name": "batches/b1", "metadata": meta, **more}


def test_it_a_pending_batch_has_its_name_and_no_results():
    status = CLIENT.status(PRO, operation("BATCH_STATE_PENDING"), lines("a"))
    assert (status.name, status.state, status.is_final) == ("batches/b1", "pending", False)
    assert status.display_name == "steadyshot-x" and status.results == {}


def test_it_lines_are_read_by_their_key_whatever_their_order():
    output = {"inlinedResponses": {"inlinedResponses": [
        {"response": image_response(), "metadata": {"key": "b"}},
        {"error": {"code": 14, "message": "The model is overloaded."}, "metadata": {"key": "a"}},
    ]}}  # fmt: skip
    status = CLIENT.status(
        PRO, operation("BATCH_STATE_SUCCEEDED", output, done=True), lines("a", "b")
    )
    assert isinstance(status.results["b"], GenerationResult) and status.results["b"].data == PNG
    assert status.results["a"].outcome == Outcome.OVERLOADED


def test_it_a_line_without_its_key_is_matched_by_its_position():
    output = {"inlinedResponses": {"inlinedResponses": [{"response": image_response()}]}}
    status = CLIENT.status(PRO, operation("BATCH_STATE_SUCCEEDED", output), lines("only"))
    assert isinstance(status.results["only"], GenerationResult)


def test_it_the_output_is_also_read_from_the_operation_response():
    output = {"inlinedResponses": {"inlinedResponses": [{"response": image_response(), "metadata": {"key": "k"}}]}}  # fmt: skip
    answer = operation("BATCH_STATE_SUCCEEDED", done=True, response=output)
    assert isinstance(CLIENT.status(PRO, answer, lines("k")).results["k"], GenerationResult)


def test_it_line_errors_and_refused_images_map_into_the_taxonomy():
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
    quota = {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]}  # fmt: skip
    items = {
        "limited": {"error": {"code": 8, "message": "Quota exceeded.", "details": [retry]}},
        "daily": {"error": {"code": 8, "message": "Quota exceeded.", "details": [quota]}},
        "bad": {"error": {"code": 3, "message": "Request contains an invalid argument."}},
        "outage": {"error": {"code": 14, "message": "The service is currently unavailable."}},
        "blocked": {"response": {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}},
        "empty": {"response": {"candidates": [{"content": {"parts": [{"text": "no"}]}}]}},
        "broken": {"response": "not an object"},
    }
    call = GenerationCall(model=PRO, prompt="p")
    got = {key: CLIENT.line_answer(call, item) for key, item in items.items()}
    assert all(isinstance(e, UpstreamError) for e in got.values())
    assert {k: e.outcome for k, e in got.items()} == {
        "limited": Outcome.RATE_LIMITED,
        "daily": Outcome.RATE_LIMITED,
        "bad": Outcome.BAD_REQUEST,
        "outage": Outcome.UNAVAILABLE,
        "blocked": Outcome.BLOCKED,
        "empty": Outcome.NO_IMAGE,
        "broken": Outcome.MALFORMED,
    }
    assert (got["limited"].retry_after_s, got["limited"].quota_scope) == (17.0, "minute")
    assert got["daily"].quota_scope == "day"


def test_it_every_end_state_is_final_and_an_unknown_one_is_polled_on():
    for raw, state in [("BATCH_STATE_EXPIRED", "expired"), ("JOB_STATE_FAILED", "failed"),
                       ("BATCH_STATE_CANCELLED", "cancelled")]:  # fmt: skip
        status = CLIENT.status(PRO, operation(raw), [])
        assert (status.state, status.is_final) == (state, True)
    assert CLIENT.status(PRO, operation("BATCH_STATE_SOMETHING_NEW"), []).state == "running"


def test_it_an_expired_batch_keeps_its_error_message():
    answer = operation("BATCH_STATE_EXPIRED", error={"code": 4, "message": "The batch expired."})
    assert CLIENT.status(PRO, answer, []).error == "The batch expired."
