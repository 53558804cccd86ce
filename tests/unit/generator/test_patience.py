"""Quality-first's wait limit for its first model ("patience"): set at admission from
the deliver-by time or the default, and shown on the form and the detail page."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from generator import queue
from generator.admission import Submission, submit


@pytest.fixture(autouse=True)
def _no_queue(monkeypatch):
    monkeypatch.setattr(queue, "enqueue", lambda request, at=None: None)


@pytest.fixture
def patience(settings):
    settings.POLICY_QUALITY_PATIENCE_S = 210.0
    settings.TIME_SCALE = 1.0


def test_it_quality_first_waits_the_default_patience_for_its_first_model(patience, alice, team):
    (row,) = submit(alice, team, Submission(prompt="a lighthouse"))
    assert row.wait_up_to - row.created == timedelta(seconds=210)
    assert row.wait_limit_text == "3.5 min"


def test_it_the_deliver_by_time_is_the_wait_limit_when_given(patience, alice, team):
    deadline = timezone.now() + timedelta(minutes=10)
    (row,) = submit(alice, team, Submission(prompt="a lighthouse", deadline=deadline))
    assert row.wait_up_to == deadline


def test_it_stability_first_has_no_wait_limit(patience, alice, team):
    (row,) = submit(alice, team, Submission(prompt="a lighthouse", strategy="stability-first"))
    assert row.wait_up_to is None
    assert row.wait_limit_text == ""


def test_it_the_wait_limit_follows_the_time_scale_of_drills(settings, alice, team):
    settings.POLICY_QUALITY_PATIENCE_S = 200.0
    settings.TIME_SCALE = 0.01
    (row,) = submit(alice, team, Submission(prompt="a lighthouse"))
    assert row.wait_up_to - row.created == timedelta(seconds=2)


def test_it_the_prompt_form_says_how_long_quality_first_waits(patience, client_for, alice):
    body = client_for(alice).get(reverse("generator:prompt")).content.decode()
    assert "retries it for up to 3.5 min" in body


def test_it_the_detail_page_shows_until_when_the_first_model_is_waited_for(
    patience, client_for, alice, team
):
    (row,) = submit(alice, team, Submission(prompt="a lighthouse"))
    body = client_for(alice).get(reverse("generator:detail", args=[row.pk])).content.decode()
    assert "Wait up to" in body
    assert "for Nano Banana Pro (3.5 min)" in body
