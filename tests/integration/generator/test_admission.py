from datetime import timedelta

import pytest
from django.utils import timezone

from generator import queue
from generator.admission import AdmissionError, Submission, submit
from generator.models import GenerationRequest, QuotaState, Status

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_creates_one_request_per_image_in_one_batch_and_queues_them(alice, team, redis_conn):
    requests = submit(alice, team, Submission(prompt=" a red apple ", count=3))
    assert len({r.batch for r in requests}) == 1
    for request in requests:
        request.refresh_from_db()
        assert request.prompt == "a red apple"
        assert request.status == Status.QUEUED
        assert request.chain[0] == "gemini-3-pro-image-preview"
        assert request.quota_state == QuotaState.RESERVED
        assert request.reserved_usd > 0
    jobs = queue.get_queue().get_jobs()
    assert sorted(j.args[0] for j in jobs) == sorted(str(r.id) for r in requests)
    assert all(j.func_name == queue.JOB and j.args[1] == 1 for j in jobs)


def test_it_stability_first_starts_on_flash(alice, team, redis_conn):
    (request,) = submit(alice, team, Submission(prompt="x", strategy="stability-first"))
    assert request.chain[0] == "gemini-2.5-flash-image"


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"prompt": "   "}, "prompt", "Write a prompt"),
        ({"prompt": "x" * 4001}, "prompt", "4001 characters"),
        # What a JSON body can carry and no database column can hold (issue 13, 4 and 7).
        ({"prompt": "\x00"}, "prompt", "NUL character"),
        ({"prompt": "a lighthouse \ud800"}, "prompt", "lone UTF-16 surrogate"),
        ({"strategy": "fastest"}, "strategy", "quality-first or stability-first"),
        ({"aspect_ratio": "7:3"}, "aspect_ratio", "16:9"),
        ({"strategy": "stability-first", "image_size": "4K"}, "image_size", "delivers 1K"),
        ({"count": 5}, "count", "between 1 and 4"),
        ({"count": 0}, "count", "between 1 and 4"),
        ({"deadline": "past"}, "deadline", "in the future"),
    ],
)
def test_it_refuses_bad_submissions_and_queues_nothing(
    alice, team, redis_conn, change, field, text
):
    if change.get("deadline") == "past":
        change["deadline"] = timezone.now() - timedelta(minutes=1)
    with pytest.raises(AdmissionError) as error:
        submit(alice, team, Submission(**{"prompt": "x", **change}))
    assert error.value.field == field
    assert text in error.value.message
    assert not GenerationRequest.objects.exists()
    assert queue.get_queue().count == 0
