"""The OpenAI-compatible endpoint, POST /v1/images/generations: OpenAI's wire format,
errors included, through our chain.

Its view is async and runs its database work in threads of its own (generator/api/
openai.py), so these tests commit their rows (transaction=True) for those threads to see.
test_openai_server.py goes through the real web server, with the official SDK."""

import pytest

from generator.models import GenerationRequest
from tests.integration.generator.test_api import call, in_own_thread

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/v1/images/generations"


def assert_openai_error(response, status: int, words: str, code=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"]
    assert error["code"] == code
    assert error["type"] == ("rate_limit_error" if status == 429 else "invalid_request_error")


def test_it_refuses_a_call_without_a_valid_token(client, token):
    response = in_own_thread(call, client, "post", PATH, None, {"prompt": "a"})
    assert_openai_error(response, 401, "API token", "invalid_api_key")
    response = in_own_thread(call, client, "post", PATH, "sst_unknown", {"prompt": "a"})
    assert_openai_error(response, 401, "API token", "invalid_api_key")


def test_it_answers_429_in_its_own_format_after_too_many_unknown_tokens(client, token, settings):
    # Issue 13, item 10: token guessing is throttled per address, as on the JSON API.
    settings.API_TOKEN_FAILURE_RATE = "3/10m"
    for n in range(3):
        response = in_own_thread(call, client, "post", PATH, f"sst_guess{n}", {"prompt": "a"})
        assert response.status_code == 401
    for raw in ("sst_guess3", token):
        response = in_own_thread(call, client, "post", PATH, raw, {"prompt": "a"})
        assert_openai_error(response, 429, "unknown API token", "too_many_failures")
        assert int(response["Retry-After"]) > 0
    assert not GenerationRequest.objects.exists()


@pytest.mark.parametrize(
    ("body", "words", "code"),
    [
        ({}, "“prompt” is required", None),
        ({"prompt": "a", "model": "dall-e-3"}, "Unknown model", "model_not_found"),
        ({"prompt": "a", "size": "big"}, "“size” must be", None),
        ({"prompt": "a", "response_format": "url"}, "b64_json", None),
        ({"prompt": "a", "n": 9}, "between 1 and 4", "invalid"),
        # Issue 13, item 3: wrong types were 500s (unhashable, int("²")).
        ({"prompt": "a", "model": {"a": 1}}, "“model” must be", None),
        ({"prompt": "a", "model": ["a"]}, "“model” must be", None),
        ({"prompt": "a", "size": "²x²"}, "“size” must be", None),
        ({"prompt": "a", "size": 1024}, "“size” must be", None),
        ({"prompt": "a", "size": "1x" + "9" * 5000}, "“size” must be", None),
        ({"prompt": "a", "n": "2"}, "“n” must be", None),
        ({"prompt": "a", "n": True}, "“n” must be", None),
        ({"prompt": ["a"]}, "“prompt” must be", None),
        # Items 4 and 7: what no database column can hold, refused as the web form does.
        ({"prompt": "\x00"}, "NUL character", "invalid"),
        ({"prompt": "a fox \ud800"}, "surrogate", "invalid"),
        ([], "must be a JSON object", None),
        (
            {"prompt": "a", "model": "economy"},
            "Economy is served by the JSON API",
            "model_not_found",
        ),
    ],
)
def test_it_says_what_is_wrong_and_queues_nothing(client, token, body, words, code):
    response = in_own_thread(call, client, "post", PATH, token, body)
    assert_openai_error(response, 400, words, code)
    assert not GenerationRequest.objects.exists()


def test_it_refuses_deeply_nested_json_as_not_json(client, token):
    # Issue 13, item 2: a RecursionError while decoding was a 500.
    response = in_own_thread(call, client, "post", PATH, token, "[" * 50000)
    assert_openai_error(response, 400, "not valid JSON")


@pytest.mark.parametrize("size", [70 * 1024, 3 * 1024 * 1024])
def test_it_answers_an_oversized_body_with_413_in_its_own_format(client, token, size):
    # Issue 13, item 7: the 413 was turned into a 400 (and 3 MB was Django's HTML 400).
    response = in_own_thread(call, client, "post", PATH, token, {"prompt": "x" * size})
    assert_openai_error(response, 413, "KiB")
    assert not GenerationRequest.objects.exists()


def test_it_answers_over_quota_as_a_rate_limit_with_retry_after(client, token, team):
    team.images_per_day = 0
    team.save()
    response = in_own_thread(call, client, "post", PATH, token, {"prompt": "a"})
    assert_openai_error(response, 429, "quota", "quota_exceeded")
    assert int(response["Retry-After"]) >= 1


def test_it_refuses_a_wrong_method_in_its_own_format(client, token):
    response = in_own_thread(call, client, "get", PATH, token)
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"
