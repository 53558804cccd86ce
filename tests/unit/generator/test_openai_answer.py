"""The OpenAI-compatible endpoint's answer once the requests of a call ended
(generator/api/openai.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from generator.api.openai import _answer
from generator.models import Status
from tests.media import private_media
from tests.unit.generator.test_views import make_request

pytestmark = pytest.mark.django_db


def test_it_answers_the_images_that_came_and_names_the_model_that_served_them(
    alice, team, settings, tmp_path
):
    private_media(settings, tmp_path)
    now = timezone.now()
    failed = make_request(alice, team, status=Status.FAILED, error_code="unavailable", created=now)
    served = make_request(
        alice,
        team,
        served_model="gemini-2.5-flash-image",
        created=now + timedelta(milliseconds=1),
    )

    answer = _answer([failed.pk, served.pk])

    assert len(answer["data"]) == 1  # the failed one is left out, not a 500 or a ""
    assert answer["model"] == "gemini-2.5-flash-image"
