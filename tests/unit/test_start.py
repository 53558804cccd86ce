"""The signed-in start page: a prompt box, the member's latest requests with live
status, and what the team may still generate; the sandbox's profile when it is the
upstream."""

import re

import pytest
from django.urls import reverse

from generator.models import Status
from tests.media import private_media
from tests.unit.generator.test_views import form, make_request


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    private_media(settings, tmp_path)


def test_it_shows_a_member_their_recent_requests_with_live_status(client_for, alice, bob, team):
    done = make_request(alice, team, prompt="a lighthouse at dusk")
    running = make_request(alice, team, status=Status.RUNNING, prompt="a fox in the snow")
    others = make_request(bob, team, prompt="bob's own picture")
    body = client_for(alice).get(reverse("home")).content.decode()
    assert f'id="r-{done.pk}"' in body
    # The active one is watched by the page's script, as in the gallery.
    assert f'data-status-url="{reverse("generator:status", args=[running.pk])}"' in body
    assert "Running on Nano Banana Pro." in body
    assert f'id="r-{others.pk}"' not in body
    assert "Images from Gemini, delivered." not in body  # the visitors' text


def test_it_shows_the_teams_quota_left(client_for, alice, team):
    team.images_per_day = 40
    team.save()
    body = client_for(alice).get(reverse("home")).content.decode()
    assert "Images today: 40 left of 40" in body


def test_it_submits_from_the_prompt_box(client_for, alice):
    client = client_for(alice)
    body = client.get(reverse("home")).content.decode()
    box = re.search(r'<form method="post" action="/new/".*?</form>', body, re.S)[0]
    fields = dict(re.findall(r'name="(aspect_ratio|image_size|count)" value="([^"]+)"', box))
    assert 'name="prompt"' in box and 'name="strategy"' in box
    response = client.post(reverse("generator:prompt"), form(prompt="a fox", **fields))
    assert response.status_code == 302
    assert alice.generation_requests.get().prompt == "a fox"


def test_it_names_the_profile_the_sandbox_plays(client_for, alice, settings, monkeypatch):
    from generator.upstream import sandbox_profile

    settings.UPSTREAM_SANDBOX = True
    monkeypatch.setattr(
        sandbox_profile, "_ask", lambda: {"name": "peak", "description": "Peak hours."}
    )
    body = client_for(alice).get(reverse("home")).content.decode()
    assert re.search(r"playing the <strong[^>]*>peak</strong> profile: Peak hours\.", body)
    settings.UPSTREAM_SANDBOX = False
    body = client_for(alice).get(reverse("generator:prompt")).content.decode()
    assert 'id="sandbox-notice"' not in body


def test_it_says_when_the_sandbox_does_not_answer(client_for, alice, settings):
    settings.UPSTREAM_SANDBOX = True  # SANDBOX_URL points at a closed port here
    body = client_for(alice).get(reverse("generator:prompt")).content.decode()
    assert "it does not answer right now" in body
