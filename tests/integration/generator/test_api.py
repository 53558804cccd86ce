"""The JSON API and the OpenAI-compatible endpoint, through Django's test client: tokens,
validation, what is queued, and who may see what. (The chain itself runs in
test_chain.py; here the queued jobs are only looked at in Redis.)"""

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiToken
from generator import queue
from generator.models import GenerationRequest, Status

pytestmark = pytest.mark.django_db


def in_own_thread(function, *args, **kwargs):
    """function(*args, **kwargs) in a thread of its own. For an async view through the
    test client: Playwright's sync API (the browser tests, earlier in a whole run) leaves
    an event loop running in the main thread, where the client cannot run one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args, **kwargs).result()


def call(client, method, path, token=None, body=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if body is None:
        return getattr(client, method)(path, **headers)
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return getattr(client, method)(path, data=data, content_type="application/json", **headers)


def test_it_refuses_calls_without_a_valid_token(client, alice, redis_conn):
    response = call(client, "get", "/api/v1/generations")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["error"]["message"]

    token, raw = ApiToken.issue(alice, "old")
    token.revoked = token.created
    token.save()
    response = call(client, "get", "/api/v1/generations", raw)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"

    # A live token of a deactivated account: the answer names that case too.
    _, raw = ApiToken.issue(alice, "new")
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    response = call(client, "get", "/api/v1/generations", raw)
    assert response.status_code == 401
    assert "its account is deactivated" in response.json()["error"]["message"]


def test_it_submit_queues_one_request_per_image(
    client, token, alice, team, redis_conn, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = call(
            client,
            "post",
            "/api/v1/generations",
            token,
            {
                "prompt": "a red kite",
                "strategy": "stability-first",
                "aspect_ratio": "16:9",
                "count": 2,
            },
        )
    assert response.status_code == 202, response.content
    data = response.json()["data"]
    assert len(data) == 2
    assert {d["status"] for d in data} == {"queued"}
    assert data[0]["requested"]["aspect_ratio"] == "16:9"
    assert data[0]["requested"]["chain"][0] == "gemini-2.5-flash-image"
    rows = GenerationRequest.objects.filter(pk__in=[d["id"] for d in data])
    assert {(r.user, r.team, r.strategy) for r in rows} == {(alice, team, "stability-first")}
    # Each is in the queue, as the workers will see it.
    queued = set(queue.get_queue().get_job_ids())
    assert {queue.job_id(r.pk, r.step) for r in rows} <= queued


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "prompt", "required"),
        ({"prompt": "   "}, "prompt", "Write a prompt"),
        ({"prompt": "x" * 4001}, "prompt", "limit is 4000"),
        ({"prompt": "a", "strategy": "fastest"}, "strategy", "quality-first"),
        ({"prompt": "a", "aspect_ratio": "7:3"}, "aspect_ratio", "16:9"),
        ({"prompt": "a", "count": 9}, "count", "between 1 and 4"),
        ({"prompt": "a", "count": "2"}, "count", "whole number"),
        ({"prompt": "a", "deadline": "tomorrow"}, "deadline", "ISO 8601"),
        ({"prompt": "a", "deadline": "2001-01-01T00:00:00Z"}, "deadline", "future"),
        ({"prompt": "a", "colour": "red"}, "colour", "Unknown field"),
        ({"prompt": "a", "team": "acme"}, "team", "team id"),
    ],
)
def test_it_submit_says_which_field_is_wrong_and_queues_nothing(client, token, body, field, words):
    response = call(client, "post", "/api/v1/generations", token, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field
    assert words in error["message"]
    assert not GenerationRequest.objects.exists()


def test_it_submit_rejects_a_body_that_is_not_json(client, token):
    response = call(client, "post", "/api/v1/generations", token, "prompt=a")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_it_submit_into_a_team_of_someone_else_is_refused(client, token, charlie):
    response = call(
        client,
        "post",
        "/api/v1/generations",
        token,
        {"prompt": "a", "team": str(charlie.current_team().pk)},
    )
    assert response.status_code == 404
    assert not GenerationRequest.objects.exists()


def test_it_status_and_list_show_the_callers_team_only(client, token, alice, charlie, redis_conn):
    mine = call(client, "post", "/api/v1/generations", token, {"prompt": "mine"}).json()["data"]
    _, other_token = ApiToken.issue(charlie, "c")
    theirs = call(client, "post", "/api/v1/generations", other_token, {"prompt": "theirs"})
    theirs_id = theirs.json()["data"][0]["id"]

    response = call(client, "get", f"/api/v1/generations/{mine[0]['id']}", token)
    assert response.status_code == 200
    body = response.json()
    assert body["prompt"] == "mine"
    assert body["attempts"] == []
    assert body["image_url"] is None

    assert call(client, "get", f"/api/v1/generations/{theirs_id}", token).status_code == 404
    assert call(client, "get", f"/api/v1/generations/{theirs_id}/image", token).status_code == 404
    assert call(client, "get", "/api/v1/generations/not-a-uuid", token).status_code == 404
    listed = call(client, "get", "/api/v1/generations", token).json()
    assert [d["id"] for d in listed["data"]] == [mine[0]["id"]]


def test_it_list_pages_newest_first(client, token, alice, redis_conn, monkeypatch):
    monkeypatch.setattr("generator.api.rules.PAGE_SIZE", 2)
    ids = []
    for n in range(5):
        ids += [
            d["id"]
            for d in call(
                client, "post", "/api/v1/generations", token, {"prompt": f"p{n}"}
            ).json()["data"]
        ]
    seen, before = [], None
    while True:
        path = "/api/v1/generations" + (f"?before={before}" if before else "")
        page = call(client, "get", path, token).json()
        seen += [d["id"] for d in page["data"]]
        before = page["next_before"]
        if not before:
            break
    assert seen == list(reversed(ids))


def test_it_cancel_ends_a_queued_request_at_once(client, token, redis_conn):
    (queued,) = call(client, "post", "/api/v1/generations", token, {"prompt": "a"}).json()["data"]
    response = call(client, "post", f"/api/v1/generations/{queued['id']}/cancel", token)
    assert response.status_code == 202
    assert response.json()["status"] == "canceled"
    row = GenerationRequest.objects.get(pk=queued["id"])
    assert row.status == Status.CANCELED
    assert row.quota_state == "refunded"
    again = call(client, "post", f"/api/v1/generations/{queued['id']}/cancel", token)
    assert again.status_code == 409


def test_it_cancel_says_a_running_request_may_still_deliver(client, token, redis_conn):
    (sent,) = call(client, "post", "/api/v1/generations", token, {"prompt": "a"}).json()["data"]
    assert not sent["cancel_requested"]
    GenerationRequest.objects.claim(sent["id"], 1, "worker-1")  # its call is in flight

    response = call(client, "post", f"/api/v1/generations/{sent['id']}/cancel", token)

    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["cancel_requested"]) == ("running", True)
    assert "if it returns an image, the image is delivered and charged" in body["status_reason"]
    again = call(client, "get", f"/api/v1/generations/{sent['id']}", token).json()
    assert again["cancel_requested"] and again["status_reason"] == body["status_reason"]


def test_it_says_a_request_is_falling_back_before_it_has_fallen_back(client, token, redis_conn):
    (sent,) = call(client, "post", "/api/v1/generations", token, {"prompt": "a"}).json()["data"]
    assert not sent["falling_back"]
    GenerationRequest.objects.filter(pk=sent["id"]).update(
        current_model="gemini-2.5-flash-image", fallback_reason="Nano Banana Pro is down."
    )

    found = call(client, "get", f"/api/v1/generations/{sent['id']}", token).json()

    assert (found["status"], found["falling_back"], found["fell_back"]) == ("queued", True, False)
    assert found["fallback_reason"] == "Nano Banana Pro is down."


def test_it_cancel_is_for_the_member_who_asked_or_an_owner(client, token, bob, redis_conn):
    (mine,) = call(client, "post", "/api/v1/generations", token, {"prompt": "a"}).json()["data"]
    _, bobs_token = ApiToken.issue(bob, "ci")
    refused = call(client, "post", f"/api/v1/generations/{mine['id']}/cancel", bobs_token)
    assert refused.status_code == 403
    assert "the member who asked for this image" in refused.json()["error"]["message"]
    assert GenerationRequest.objects.get(pk=mine["id"]).status == Status.QUEUED
    # Bob's own request, canceled by Alice, the team's owner.
    (his,) = call(client, "post", "/api/v1/generations", bobs_token, {"prompt": "b"}).json()[
        "data"
    ]
    assert (
        call(client, "post", f"/api/v1/generations/{his['id']}/cancel", token).status_code == 202
    )


# --- No 500 on any input (issue 13): each is a JSON 4xx that queues nothing -------------


@pytest.mark.parametrize(
    "deadline",
    [
        "2027-13-45T00:00:00",  # month 13: Django's parser raises ValueError
        "2027-01-01T25:00:00Z",
        "2027-01-01T00:00:00+99:00",  # an offset no time zone has
        "9999-12-31T23:59:59-23:00",  # beyond year 9999 in UTC
        12345,
    ],
)
def test_it_refuses_a_deadline_that_is_not_a_real_time(client, token, deadline):
    response = call(
        client, "post", "/api/v1/generations", token, {"prompt": "a", "deadline": deadline}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", "deadline")
    assert "ISO 8601" in error["message"]
    assert not GenerationRequest.objects.exists()


def test_it_refuses_a_deadline_more_than_a_week_ahead(client, token, redis_conn):
    far = (timezone.now() + timedelta(days=8)).isoformat()
    response = call(client, "post", "/api/v1/generations", token, {"prompt": "a", "deadline": far})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", "deadline")
    assert "at most 7 days from now" in error["message"]
    assert not GenerationRequest.objects.exists()
    near = (timezone.now() + timedelta(days=6)).isoformat()
    accepted = call(
        client, "post", "/api/v1/generations", token, {"prompt": "a", "deadline": near}
    )
    assert accepted.status_code == 202


def test_it_lists_the_team_a_program_names(client, token, alice, team, charlie, redis_conn):
    from accounts.models import Team

    studio = Team.create_with_owner("Studio", alice)
    alice.switch_team(team)  # Acme stays the active team
    body = {"prompt": "for the studio", "team": str(studio.pk)}
    (sent,) = call(client, "post", "/api/v1/generations", token, body).json()["data"]
    assert sent["team"] == str(studio.pk)

    listed = call(client, "get", f"/api/v1/generations?team={studio.pk}", token).json()
    assert [r["id"] for r in listed["data"]] == [sent["id"]]
    assert call(client, "get", "/api/v1/generations", token).json()["data"] == []  # Acme's
    outsider = Team.objects.get(memberships__user=charlie)
    refused = call(client, "get", f"/api/v1/generations?team={outsider.pk}", token)
    assert (refused.status_code, refused.json()["error"]["field"]) == (404, "team")


def test_it_filters_by_one_status_and_refuses_two(client, token, redis_conn):
    (sent,) = call(client, "post", "/api/v1/generations", token, {"prompt": "a"}).json()["data"]
    queued = call(client, "get", "/api/v1/generations?status=queued", token).json()["data"]
    assert [r["id"] for r in queued] == [sent["id"]]
    assert call(client, "get", "/api/v1/generations?status=failed", token).json()["data"] == []
    both = call(client, "get", "/api/v1/generations?status=failed&status=queued", token)
    assert both.status_code == 400
    assert (both.json()["error"]["field"], both.json()["error"]["message"]) == (
        "status",
        "Give “status” once.",
    )


def test_it_refuses_deeply_nested_json_as_not_json(client, token):
    response = call(client, "post", "/api/v1/generations", token, "[" * 50000)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("prompt", "words"), [("\x00", "NUL character"), ("a fox \ud800", "surrogate")]
)
def test_it_refuses_a_prompt_no_database_can_store(client, token, prompt, words):
    # json.dumps writes the lone surrogate as the escape \ud800, as a client would.
    response = call(client, "post", "/api/v1/generations", token, {"prompt": prompt})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", "prompt")
    assert words in error["message"]
    assert not GenerationRequest.objects.exists()


@pytest.mark.parametrize("size", [70 * 1024, 3 * 1024 * 1024])
def test_it_answers_an_oversized_body_with_a_json_413(client, token, size):
    # 70 KiB is over our limit; 3 MB is also over Django's DATA_UPLOAD_MAX_MEMORY_SIZE.
    response = call(client, "post", "/api/v1/generations", token, {"prompt": "x" * size})
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "too_large"
    assert not GenerationRequest.objects.exists()


def test_it_refuses_a_wrong_method_in_json(client, token):
    response = call(client, "delete", "/api/v1/generations", token)
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
