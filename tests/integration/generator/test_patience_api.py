"""The API says until when a quality-first request waits for its first model."""

import json
from datetime import timedelta

import pytest
from django.utils.dateparse import parse_datetime

from accounts.models import ApiToken

pytestmark = pytest.mark.django_db


def test_it_answers_the_wait_limit_of_a_quality_first_request(client, alice, redis_conn, settings):
    settings.POLICY_QUALITY_PATIENCE_S = 210.0
    settings.TIME_SCALE = 1.0
    _, token = ApiToken.issue(alice, "ci")
    response = client.post(
        "/api/v1/generations",
        data=json.dumps({"prompt": "a red kite"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 202, response.content
    (request,) = response.json()["data"]
    wait_up_to = parse_datetime(request["requested"]["wait_up_to"])
    created = parse_datetime(request["created"])
    assert wait_up_to - created == timedelta(seconds=210)
