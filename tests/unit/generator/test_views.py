"""The web UI's views: each works, a team member may use it, an outsider gets 404, an
anonymous visitor is sent to log in, a wrong method is refused."""

import io
import re
import zipfile
from datetime import datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from accounts.models import Team
from generator.images import store_generated_image
from generator.models import (
    Attempt,
    GenerationRequest,
    Image,
    QuotaState,
    ReferenceImage,
    Status,
)
from generator.status import queue_position, status_dict, status_text, status_view
from monitoring import rollups
from tests.media import picture as png
from tests.media import private_media


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    private_media(settings, tmp_path)


def make_request(user, team, *, status=Status.SUCCEEDED, prompt="a red fox", **fields):
    row = GenerationRequest.objects.create(
        user=user,
        team=team,
        prompt=prompt,
        strategy="quality-first",
        chain=["gemini-3-pro-image-preview", "gemini-2.5-flash-image"],
        status=status,
        current_model="gemini-3-pro-image-preview",
        quota_state=QuotaState.RESERVED,
        **fields,
    )
    if status == Status.SUCCEEDED:
        served = fields.get("served_model") or "gemini-3-pro-image-preview"
        GenerationRequest.objects.filter(pk=row.pk).update(
            served_model=served, finished=timezone.now(), delivered_width=64, delivered_height=48
        )
        row.refresh_from_db()
        store_generated_image(row, png())
    return row


def form(**fields) -> dict:
    """The prompt form's fields, with the defaults a user leaves alone."""
    return {
        "strategy": "quality-first",
        "aspect_ratio": "1:1",
        "image_size": "1K",
        "count": 1,
        **fields,
    }


@pytest.fixture
def done(alice, team):
    return make_request(alice, team)


@pytest.fixture
def queued(alice, team):
    return make_request(alice, team, status=Status.QUEUED, prompt="a queued cat")


# --- access, for every page ----------------------------------------------------------------

PAGES = ["detail", "status", "card", "original", "thumbnail", "delete"]


@pytest.mark.parametrize("name", PAGES)
def test_it_shows_each_page_to_a_team_member(client_for, bob, done, name):
    response = client_for(bob).get(reverse(f"generator:{name}", args=[done.pk]))
    assert response.status_code in (200, 403)  # delete: bob did not ask for it
    if name != "delete":
        assert response.status_code == 200


@pytest.mark.parametrize("name", [*PAGES, "cancel", "favourite", "describe", "rerun"])
def test_it_answers_404_to_an_outsider(client_for, charlie, done, name):
    client = client_for(charlie)
    url = reverse(f"generator:{name}", args=[done.pk])
    response = (
        client.post(url)
        if name in ("cancel", "favourite", "describe", "rerun")
        else client.get(url)
    )
    assert response.status_code == 404
    assert b"belongs to a team you are not part of" in response.content


@pytest.mark.parametrize("name", PAGES)
def test_it_sends_an_anonymous_visitor_to_log_in(client, done, name):
    response = client.get(reverse(f"generator:{name}", args=[done.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))


@pytest.mark.parametrize("name", ["prompt", "gallery"])
def test_it_sends_an_anonymous_visitor_to_log_in_from_the_team_pages(client, db, name):
    response = client.get(reverse(f"generator:{name}"))
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("detail", "post"),
        ("status", "post"),
        ("original", "post"),
        ("cancel", "get"),
        ("rerun", "get"),
    ],
)
def test_it_refuses_a_wrong_method(client_for, alice, done, name, method):
    response = getattr(client_for(alice), method)(reverse(f"generator:{name}", args=[done.pk]))
    assert response.status_code == 405


def test_it_answers_404_for_a_deleted_request(client_for, alice, done):
    done.soft_delete()
    assert client_for(alice).get(reverse("generator:detail", args=[done.pk])).status_code == 404


# --- prompt page --------------------------------------------------------------------------


def test_it_shows_the_prompt_form(client_for, alice):
    response = client_for(alice).get(reverse("generator:prompt"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Up to 4000 characters" in body
    assert "Quality first" in body and "Stability first" in body
    assert "21:9" in body
    assert 'type="file"' in body and "multiple" in body


def test_it_submits_a_prompt_as_one_request(client_for, alice, team):
    response = client_for(alice).post(
        reverse("generator:prompt"),
        form(prompt="a lighthouse", aspect_ratio="16:9", image_size="2K"),
    )
    row = GenerationRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("generator:detail", args=[row.pk])
    assert (row.prompt, row.aspect_ratio, row.image_size, row.team) == (
        "a lighthouse",
        "16:9",
        "2K",
        team,
    )
    assert row.status == Status.QUEUED


def test_it_refuses_a_form_shown_for_a_team_no_longer_active(client_for, alice, team):
    client = client_for(alice)
    page = client.get(reverse("generator:prompt")).content.decode()
    assert f'name="team" value="{team.pk}"' in page
    other = Team.create_with_owner("Side project", alice)
    alice.switch_team(other)  # in another tab
    response = client.post(
        reverse("generator:prompt"), form(prompt="a lighthouse", team=str(team.pk))
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert not GenerationRequest.objects.exists()
    assert "This page was for the team “Acme”" in body
    assert "your active team is now “Side project”" in body
    assert "a lighthouse" in body  # the input is kept
    assert f'name="team" value="{other.pk}"' in body  # and now meant for the active team
    response = client.post(
        reverse("generator:prompt"), form(prompt="a lighthouse", team=str(other.pk))
    )
    assert response.status_code == 302
    assert GenerationRequest.objects.get().team == other


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": "", "count": 1}, "Write a prompt: describe the image you want."),
        ({"prompt": "a lighthouse", "count": 0}, "Ask for between 1 and 4 images."),
        ({"prompt": "a lighthouse", "count": 5}, "Ask for between 1 and 4 images."),
        (
            {"prompt": "x" * 4001, "count": 1},
            "The prompt is 4001 characters long; the limit is 4000.",
        ),
    ],
)
def test_it_says_what_the_api_says_of_a_bad_prompt_or_count(client_for, alice, fields, message):
    response = client_for(alice).post(reverse("generator:prompt"), form(**fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not GenerationRequest.objects.exists()


@pytest.mark.parametrize("field", ["remix_of", "team"])
def test_it_submits_a_form_whose_hidden_id_was_mangled(client_for, alice, team, field):
    response = client_for(alice).post(
        reverse("generator:prompt"), form(prompt="a lighthouse", **{field: "junk"})
    )
    assert response.status_code == 302  # not "correct the fields marked below", none marked
    row = GenerationRequest.objects.get()
    assert (row.team, row.remix_of) == (team, None)


def test_it_fans_out_a_count_into_one_batch(client_for, alice):
    response = client_for(alice).post(
        reverse("generator:prompt"),
        form(prompt="a lighthouse", strategy="stability-first", count=3),
    )
    rows = GenerationRequest.objects.all()
    assert rows.count() == 3
    assert len({r.batch for r in rows}) == 1
    assert response["Location"].endswith(f"?batch={rows[0].batch}")


def test_it_shows_admission_errors_and_keeps_the_input(client_for, alice):
    # Nano Banana (stability-first's primary) delivers 1K only: admission refuses 4K.
    response = client_for(alice).post(
        reverse("generator:prompt"),
        form(prompt="keep me", strategy="stability-first", image_size="4K"),
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "Nano Banana delivers 1K; choose one of those sizes." in body
    assert "keep me" in body
    assert not GenerationRequest.objects.exists()


def test_it_shows_a_quota_refusal_on_the_form(client_for, alice, team):
    team.images_per_day = 2
    team.save()
    page = client_for(alice)
    assert page.post(reverse("generator:prompt"), form(prompt="first", count=2)).status_code == 302
    response = page.post(reverse("generator:prompt"), form(prompt="one too many"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "images per day quota is used up (2 of 2 images)" in body
    assert "It resets at" in body
    assert "one too many" in body  # the prompt is kept
    assert GenerationRequest.objects.count() == 2


def test_it_stores_reference_images(client_for, alice):
    upload = SimpleUploadedFile("ref.jpg", png("JPEG"), content_type="image/jpeg")
    client_for(alice).post(
        reverse("generator:prompt"),
        form(prompt="make it blue", references=[upload]),
    )
    reference = GenerationRequest.objects.get().references.get()
    assert (reference.mime, reference.width, reference.height) == ("image/jpeg", 64, 48)


def test_it_refuses_a_reference_that_is_not_an_image(client_for, alice):
    upload = SimpleUploadedFile("ref.png", b"not an image at all", content_type="image/png")
    response = client_for(alice).post(
        reverse("generator:prompt"),
        form(prompt="make it blue", references=[upload]),
    )
    assert "ref.png: The file is not a readable image" in response.content.decode()
    assert not GenerationRequest.objects.exists()


def _stored_files(settings) -> list:
    media = settings.MEDIA_ROOT
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def test_it_refuses_more_references_than_the_first_model_takes_on_the_form(
    client_for, alice, settings
):
    # Issue 13, item 5: admission's error removed the field, then the view read it (500).
    uploads = [
        SimpleUploadedFile(f"ref{i}.png", png(), content_type="image/png") for i in range(4)
    ]
    response = client_for(alice).post(
        reverse("generator:prompt"),
        form(prompt="combine them", strategy="stability-first", references=uploads),
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "takes at most 3 reference images; you gave 4" in body
    assert "Choose the reference images again" in body
    assert not GenerationRequest.objects.exists()
    assert not ReferenceImage.objects.exists()
    assert _stored_files(settings) == []


@pytest.mark.parametrize("refusal", ["size", "quota"])
def test_it_writes_no_file_for_a_refused_submission_with_references(
    client_for, alice, team, settings, refusal
):
    # Issue 13, item 8: every refused submission left its references on storage.
    fields = {"image_size": "4K", "strategy": "stability-first"} if refusal == "size" else {}
    if refusal == "quota":
        team.images_per_day = 0
        team.save()
    upload = SimpleUploadedFile("ref.png", png(), content_type="image/png")
    response = client_for(alice).post(
        reverse("generator:prompt"), form(prompt="edit this", references=[upload], **fields)
    )
    assert response.status_code == 200
    assert "Choose the reference images again" in response.content.decode()
    assert not GenerationRequest.objects.exists()
    assert not ReferenceImage.objects.exists()
    assert _stored_files(settings) == []


def test_it_prefills_a_remix(client_for, bob, done):
    response = client_for(bob).get(reverse("generator:prompt") + f"?remix={done.pk}")
    body = response.content.decode()
    assert "a red fox" in body
    assert f'value="{done.pk}"' in body


def test_it_prefills_a_remix_of_economy_with_the_same_lead_time(client_for, alice, team):
    created = timezone.now() - timedelta(hours=1)
    source = make_request(alice, team, created=created, deadline=created + timedelta(hours=6))
    GenerationRequest.objects.filter(pk=source.pk).update(strategy="economy")
    response = client_for(alice).get(reverse("generator:prompt") + f"?remix={source.pk}")
    shown = re.search(r'name="deadline" value="([^"]+)"', response.content.decode()).group(1)
    expected = timezone.localtime(timezone.now() + timedelta(hours=6))
    assert abs(datetime.fromisoformat(shown) - expected.replace(tzinfo=None)) < timedelta(
        minutes=2
    )


def test_it_refuses_to_remix_another_teams_request(client_for, charlie, done):
    response = client_for(charlie).get(reverse("generator:prompt") + f"?remix={done.pk}")
    assert response.status_code == 404


# --- gallery ------------------------------------------------------------------------------


def test_it_shows_the_team_gallery_with_model_badges(client_for, bob, done):
    make_request(
        bob,
        done.team,
        prompt="a fallback owl",
        served_model="gemini-2.5-flash-image",
        fell_back=True,
    )
    body = client_for(bob).get(reverse("generator:gallery")).content.decode()
    assert "a red fox" in body and "a fallback owl" in body
    assert "Nano Banana Pro" in body
    assert "Fell back" in body
    assert reverse("generator:thumbnail", args=[done.pk]) in body


def test_it_never_shows_another_teams_images(client_for, charlie, done):
    body = client_for(charlie).get(reverse("generator:gallery")).content.decode()
    assert "a red fox" not in body
    assert "No images yet" in body


def test_it_filters_mine_and_searches_prompts(client_for, alice, bob, done):
    make_request(bob, done.team, prompt="bob's blue whale")
    client = client_for(alice)
    mine = client.get(reverse("generator:gallery") + "?scope=mine").content.decode()
    assert "a red fox" in mine and "blue whale" not in mine
    found = client.get(reverse("generator:gallery") + "?q=WHALE").content.decode()
    assert "blue whale" in found and "a red fox" not in found


def test_it_finds_an_image_by_its_whole_prompt_pasted_in(client_for, alice, team):
    long_prompt = "a lighthouse at dusk, " * 20  # 440 characters
    make_request(alice, team, prompt=long_prompt)
    make_request(alice, team, prompt="a red fox")
    body = client_for(alice).get(reverse("generator:gallery"), {"q": long_prompt}).content
    assert "a red fox" not in body.decode()
    assert "a lighthouse at dusk" in body.decode()


def test_it_filters_by_served_model_and_fallback(client_for, alice, done):
    make_request(
        alice, done.team, prompt="an owl", served_model="gemini-2.5-flash-image", fell_back=True
    )
    client = client_for(alice)
    body = client.get(
        reverse("generator:gallery") + "?model=gemini-2.5-flash-image"
    ).content.decode()
    assert "an owl" in body and "a red fox" not in body
    body = client.get(reverse("generator:gallery") + "?fell_back=no").content.decode()
    assert "a red fox" in body and "an owl" not in body


def test_it_filters_by_day_up_to_the_last_day_a_date_picker_offers(client_for, alice, done):
    client = client_for(alice)
    for until, shown in [("9999-12-31", True), ("0001-01-01", False)]:
        response = client.get(reverse("generator:gallery") + f"?until={until}")
        assert response.status_code == 200
        assert ("a red fox" in response.content.decode()) is shown
    since = client.get(reverse("generator:gallery") + "?since=9999-12-31")
    assert since.status_code == 200 and "a red fox" not in since.content.decode()


def test_it_paginates_by_keyset(client_for, alice, team, settings):
    settings.GALLERY_PAGE_SIZE = 2
    for n in range(3):
        make_request(alice, team, status=Status.FAILED, prompt=f"prompt number {n}")
    client = client_for(alice)
    first = client.get(reverse("generator:gallery"))
    assert "prompt number 2" in first.content.decode()
    assert "prompt number 0" not in first.content.decode()
    next_query = first.context["next_query"]
    second = client.get(reverse("generator:gallery") + "?" + next_query).content.decode()
    assert "prompt number 0" in second and "prompt number 2" not in second
    assert "Load more" not in second


def test_it_loads_more_after_a_card_deleted_since_its_page_was_shown(
    client_for, alice, team, settings
):
    settings.GALLERY_PAGE_SIZE = 2
    rows = [
        make_request(alice, team, status=Status.FAILED, prompt=f"prompt number {n}")
        for n in range(3)
    ]
    client = client_for(alice)
    next_query = client.get(reverse("generator:gallery")).context["next_query"]
    rows[1].soft_delete()  # the last card of the first page, deleted by a team-mate

    second = client.get(reverse("generator:gallery") + "?" + next_query).content.decode()

    assert "prompt number 0" in second
    assert "prompt number 2" not in second and "prompt number 1" not in second


def test_it_refreshes_the_gallery_without_javascript_while_a_card_is_active(
    client_for, alice, team, done
):
    client = client_for(alice)
    refresh = '<noscript><meta http-equiv="refresh" content="5"></noscript>'
    assert refresh not in client.get(reverse("generator:gallery")).content.decode()
    make_request(alice, team, status=Status.RUNNING, prompt="still running")
    assert refresh in client.get(reverse("generator:gallery")).content.decode()


def test_it_says_why_a_zip_of_images_not_delivered_cannot_be_made(client_for, alice, team):
    failed = make_request(alice, team, status=Status.FAILED)
    response = client_for(alice).post(
        reverse("generator:bulk"), {"ids": [failed.pk], "action": "zip"}, follow=True
    )
    assert response.status_code == 200
    assert "None of the selected requests has an image yet" in response.content.decode()


def test_it_shows_no_delivery_time_for_a_request_that_delivered_nothing(client_for, alice, team):
    deadline = timezone.now() + timedelta(hours=5)
    canceled = make_request(
        alice, team, status=Status.CANCELED, deadline=deadline, finished=timezone.now()
    )
    body = client_for(alice).get(reverse("generator:detail", args=[canceled.pk])).content
    row = re.search(r'<th scope="row">Deliver by</th>.*?</tr>', body.decode(), re.S).group(0)
    assert row.endswith("<td>—</td></tr>")


def test_it_keeps_the_gallery_filters_through_a_bulk_delete(client_for, alice, team, done):
    gallery = reverse("generator:gallery") + "?scope=mine&q=fox"
    client = client_for(alice)
    assert (
        'name="next" value="' + gallery.replace("&", "&amp;")
        in client.get(gallery).content.decode()
    )
    fields = {"ids": [done.pk], "action": "delete", "next": gallery}
    confirm = client.post(reverse("generator:bulk"), fields).content.decode()
    assert f'href="{gallery.replace("&", "&amp;")}">Keep them</a>' in confirm
    deleted = client.post(reverse("generator:bulk"), {**fields, "confirm": "yes"})
    assert deleted["Location"] == gallery


def test_it_downloads_the_selected_images_as_a_zip(client_for, bob, done):
    response = client_for(bob).post(reverse("generator:bulk"), {"ids": [done.pk], "action": "zip"})
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.namelist() == [f"steadyshot-{done.pk}.png"]


def test_it_asks_before_deleting_the_selection_and_then_deletes(client_for, alice, done):
    client = client_for(alice)
    confirm = client.post(reverse("generator:bulk"), {"ids": [done.pk], "action": "delete"})
    assert "Delete 1 image?" in confirm.content.decode()
    done.refresh_from_db()
    assert done.deleted is None
    client.post(
        reverse("generator:bulk"), {"ids": [done.pk], "action": "delete", "confirm": "yes"}
    )
    done.refresh_from_db()
    assert done.deleted is not None


def test_it_ignores_another_teams_ids_in_a_bulk_action(client_for, charlie, done):
    client_for(charlie).post(
        reverse("generator:bulk"), {"ids": [done.pk], "action": "delete", "confirm": "yes"}
    )
    done.refresh_from_db()
    assert done.deleted is None


# --- one request --------------------------------------------------------------------------


def test_it_shows_requested_versus_delivered_and_the_attempts(client_for, bob, done):
    Attempt.objects.create(
        request=done,
        number=1,
        model="gemini-3-pro-image-preview",
        provider="gemini",
        outcome="overloaded",
        http_status=503,
        latency_ms=1200,
        decision="retry",
        decision_reason="Retrying in 2 s",
    )
    body = client_for(bob).get(reverse("generator:detail", args=[done.pk])).content.decode()
    assert "Requested and delivered" in body
    assert "64×48" in body
    assert "HTTP 503" in body and "1200 ms" in body and "Retrying in 2 s" in body
    assert f"?remix={done.pk}" in body


def test_it_keeps_an_old_requests_attempt_count_once_its_attempts_are_pruned(
    client_for, bob, done, settings
):
    """Attempt records go after MONITORING_RETENTION_DAYS; the request's page still says
    how many there were, as its live status does, and why their details are gone."""
    GenerationRequest.objects.filter(pk=done.pk).update(attempt_count=2)
    long_ago = timezone.now() - timedelta(days=settings.MONITORING_RETENTION_DAYS + 5)
    for number, outcome in [(1, "overloaded"), (2, "success")]:
        Attempt.objects.create(
            request=done,
            number=number,
            model="gemini-3-pro-image-preview",
            provider="gemini",
            outcome=outcome,
            started=long_ago,
        )
    rollups.roll_up()
    assert rollups.prune()["attempts"] == 2
    client = client_for(bob)
    body = client.get(reverse("generator:detail", args=[done.pk])).content.decode()
    assert '<dd data-part="attempts">2</dd>' in body
    assert (
        "This request made 2 attempts; their details were removed: attempt records are "
        f"kept for {settings.MONITORING_RETENTION_DAYS} days."
    ) in body
    assert "No attempts" not in body
    assert client.get(reverse("generator:status", args=[done.pk])).json()["attempts"] == 2


@pytest.mark.parametrize(
    ("status", "says"),
    [(Status.QUEUED, "No attempts yet."), (Status.CANCELED, "No attempts were made.")],
)
def test_it_says_whether_attempts_may_still_come(client_for, alice, team, status, says):
    row = make_request(alice, team, status=status)
    body = client_for(alice).get(reverse("generator:detail", args=[row.pk])).content.decode()
    assert says in body
    assert "details were removed" not in body


def test_it_reports_live_status_as_json(client_for, bob, queued):
    data = client_for(bob).get(reverse("generator:status", args=[queued.pk])).json()
    assert data["status"] == "queued"
    assert data["text"] == "Queued for Nano Banana Pro: waiting for a free worker, next in line."
    assert data["queue_position"] == 1
    assert data["final"] is False
    queued.refresh_from_db()
    assert data["version"] == status_view(queued).version


def test_it_cancels_a_queued_request_and_refunds(client_for, alice, queued):
    client_for(alice).post(reverse("generator:cancel", args=[queued.pk]))
    queued.refresh_from_db()
    assert queued.status == Status.CANCELED
    assert queued.quota_state == QuotaState.REFUNDED


def test_it_flags_a_running_request_for_cancel(client_for, alice, team):
    running = make_request(alice, team, status=Status.RUNNING)
    client_for(alice).post(reverse("generator:cancel", args=[running.pk]))
    running.refresh_from_db()
    assert running.status == Status.RUNNING and running.cancel_requested


def test_it_lets_only_the_author_or_an_owner_cancel(client_for, bob, queued):
    response = client_for(bob).post(reverse("generator:cancel", args=[queued.pk]))
    assert response.status_code == 403
    assert "Only the member who asked for this image" in response.content.decode()
    queued.refresh_from_db()
    assert queued.status == Status.QUEUED


def test_it_deletes_after_confirmation(client_for, alice, done):
    client = client_for(alice)
    assert (
        "Delete this image?"
        in client.get(reverse("generator:delete", args=[done.pk])).content.decode()
    )
    response = client.post(reverse("generator:delete", args=[done.pk]))
    assert response["Location"] == reverse("generator:gallery")
    done.refresh_from_db()
    assert done.deleted is not None


def test_it_reruns_as_a_new_request(client_for, bob, done):
    response = client_for(bob).post(reverse("generator:rerun", args=[done.pk]))
    new = GenerationRequest.objects.exclude(pk=done.pk).get()
    assert response["Location"] == reverse("generator:detail", args=[new.pk])
    assert (new.prompt, new.remix_of_id, new.user) == (done.prompt, done.pk, bob)
    done.refresh_from_db()
    assert done.status == Status.SUCCEEDED


def test_it_toggles_a_favourite(client_for, bob, done):
    client = client_for(bob)
    client.post(reverse("generator:favourite", args=[done.pk]))
    assert done.is_favourite_of(bob)
    body = client.get(reverse("generator:gallery") + "?scope=favourites").content.decode()
    assert "a red fox" in body
    client.post(reverse("generator:favourite", args=[done.pk]))
    assert not done.is_favourite_of(bob)


def test_it_saves_a_description_used_as_alt_text(client_for, alice, done):
    client_for(alice).post(
        reverse("generator:describe", args=[done.pk]), {"description": "A fox in snow"}
    )
    image = Image.objects.get(request=done)
    assert image.alt_text == "A fox in snow"
    body = client_for(alice).get(reverse("generator:detail", args=[done.pk])).content.decode()
    assert 'alt="A fox in snow"' in body


def test_it_refuses_a_description_that_cannot_be_stored(client_for, alice, done):
    client = client_for(alice)
    url = reverse("generator:describe", args=[done.pk])
    client.post(url, {"description": "A fox in snow"})
    response = client.post(url, {"description": "A fox\x00 in snow"}, follow=True)
    assert "cannot be stored" in response.content.decode()
    assert Image.objects.get(request=done).alt_text == "A fox in snow"  # kept as it was


def test_it_streams_the_original_privately(client_for, bob, done):
    response = client_for(bob).get(reverse("generator:original", args=[done.pk]) + "?download=1")
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "private, max-age=86400"
    assert "attachment" in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == done.image.file.open("rb").read()


def test_it_streams_the_thumbnail_with_its_own_type(client_for, bob, done):
    response = client_for(bob).get(reverse("generator:thumbnail", args=[done.pk]))
    assert response["Content-Type"] == "image/jpeg"


def test_it_links_new_image_and_gallery_in_the_nav(client_for, alice):
    body = client_for(alice).get(reverse("home")).content.decode()
    assert f'href="{reverse("generator:prompt")}"' in body
    assert f'href="{reverse("generator:gallery")}"' in body


# --- what the live status says ------------------------------------------------------------


def test_it_says_which_model_a_request_fell_back_from_and_why(alice, team):
    row = make_request(
        alice,
        team,
        served_model="gemini-2.5-flash-image",
        fell_back=True,
        fallback_reason="Nano Banana Pro was unavailable.",
    )
    assert status_text(row) == (
        "Done by Nano Banana, after falling back from Nano Banana Pro "
        "because Nano Banana Pro was unavailable."
    )


def test_it_counts_the_queue_position_across_teams(alice, charlie, team):
    make_request(charlie, charlie.active_team, status=Status.QUEUED)
    mine = make_request(alice, team, status=Status.QUEUED)
    assert queue_position(mine) == 2
    assert status_dict(mine)["text"] == (
        "Queued for Nano Banana Pro: waiting for a free worker, 1 ahead of you."
    )


# --- a submission after being signed out ---------------------------------------------------


def test_it_keeps_the_prompt_of_a_signed_out_submission_through_the_login(client, alice):
    from tests.conftest import PASSWORD

    response = client.post(
        reverse("generator:prompt"),
        form(prompt="A lighthouse at dusk, kept", strategy="stability-first", aspect_ratio="16:9"),
    )
    login = reverse("accounts:login")
    assert response.status_code == 302
    assert response["Location"] == f"{login}?next={reverse('generator:prompt')}"
    assert not GenerationRequest.objects.exists()
    response = client.post(
        response["Location"], {"username": alice.email, "password": PASSWORD}, follow=True
    )
    body = response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("generator:prompt")
    assert ">A lighthouse at dusk, kept</textarea>" in body
    assert 'value="stability-first" checked' in body
    assert '<option value="16:9" selected>' in body
    assert "your prompt was kept" in body
    # Once: the next visit starts empty.
    again = client.get(reverse("generator:prompt")).content.decode()
    assert "A lighthouse at dusk, kept" not in again


@pytest.mark.parametrize(
    "target",
    ["/\\evil.com", "//evil.com", "https://evil.com/", "/\\/evil.com", "\\\\evil.com", "0", "x"],
)
def test_it_never_follows_next_to_another_site(client_for, alice, done, target):
    # Issue 13, item 11: "/\evil.com" passed the prefix check; browsers read it as
    # //evil.com.
    response = client_for(alice).post(
        reverse("generator:favourite", args=[done.pk]), {"next": target}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("generator:detail", args=[done.pk])


def test_it_follows_next_to_a_page_of_this_site(client_for, alice, done):
    response = client_for(alice).post(
        reverse("generator:favourite", args=[done.pk]), {"next": "/gallery/?scope=mine"}
    )
    assert response["Location"] == "/gallery/?scope=mine"


FORM_BODY = "strategy=quality-first&aspect_ratio=1:1&image_size=1K&count=1&prompt="


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        # A lone surrogate as UTF-8 would encode it (browsers never do): Django reads
        # the invalid bytes as U+FFFD.
        (FORM_BODY + "a%ED%A0%80b", "application/x-www-form-urlencoded"),
        # A charset that can spell one: Django refuses the body.
        (
            FORM_BODY.encode() + b"a\\ud800b",
            "application/x-www-form-urlencoded; charset=unicode_escape",
        ),
        (FORM_BODY + "a%00b", "application/x-www-form-urlencoded"),
    ],
)
def test_it_never_stores_what_a_database_cannot_hold_from_the_web_form(
    client_for, alice, body, content_type
):
    # Issue 13, items 4 and 7 on the web: a lone surrogate was a 500 at insert.
    client = client_for(alice)
    client.raise_request_exception = False
    response = client.post(reverse("generator:prompt"), body, content_type=content_type)
    assert response.status_code in (200, 302, 400)
    for prompt in GenerationRequest.objects.values_list("prompt", flat=True):
        assert "\x00" not in prompt
        assert not any("\ud800" <= c <= "\udfff" for c in prompt)
    if "%00" in str(body):
        assert "Null characters are not allowed" in response.content.decode()
