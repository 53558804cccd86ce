"""Economy through the JSON API: submitted with a deadline hours away, it waits in the
database for Batch mode and says so; without one it is refused, naming the field."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.integration.generator.test_api import call

pytestmark = pytest.mark.django_db


def test_it_an_economy_submission_waits_for_batch_mode(client, token, redis_conn):
    deadline = (timezone.now() + timedelta(hours=12)).isoformat()
    body = {"prompt": "a campaign shot", "strategy": "economy", "deadline": deadline}

    response = call(client, "post", "/api/v1/generations", token, body)

    assert response.status_code == 202
    [row] = response.json()["data"]
    assert (row["status"], row["route"], row["upstream_batch"]) == ("scheduled", "batch", None)
    assert redis_conn.keys("rq:job:*") == []  # nothing queued: it waits in the database
    detail = call(client, "get", f"/api/v1/generations/{row['id']}", token).json()
    assert detail["strategy"] == "economy" and detail["left_batch_reason"] is None
    # Waiting for the next batch, at no stated time: never a time already past.
    waits = detail["waiting_until"]
    assert waits is None or waits > timezone.now().isoformat()


def test_it_an_economy_submission_without_a_deadline_is_refused(client, token, redis_conn):
    body = {"prompt": "a campaign shot", "strategy": "economy"}

    response = call(client, "post", "/api/v1/generations", token, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "deadline" and "Economy needs" in error["message"]
