"""Images, thumbnails and references behave the same on the file system and in a private
S3 bucket (a real SeaweedFS server): every test here runs on both (`media_storage`)."""

import io
import zipfile
from datetime import timedelta

import httpx
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from accounts.models import ApiToken
from config.storage import media_storage_entry
from generator.models import GenerationRequest, Image, ReferenceImage, Status
from generator.retention import purge_deleted, sweep_orphan_files
from tests.integration.generator.test_chain import wait_for_all
from tests.integration.support.storage import use_bucket
from tests.media import picture
from tests.unit.generator.test_views import form, make_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def done(media_storage, alice, team):
    return make_request(alice, team)


def _names(image: Image) -> list[str]:
    return [image.file.name, image.thumbnail.name]


def test_it_writes_the_image_and_its_thumbnail_to_the_storage(media_storage, done):
    image = done.images.get()
    assert all(media_storage.exists(name) for name in _names(image))
    assert media_storage.size(image.file.name) == image.bytes
    with media_storage.open(image.thumbnail.name) as handle:
        assert PILImage.open(handle).format == "JPEG"


def test_it_streams_the_original_and_the_thumbnail_to_a_team_member(done, bob, client_for):
    client = client_for(bob)
    original = client.get(reverse("generator:original", args=[done.pk]))
    thumbnail = client.get(reverse("generator:thumbnail", args=[done.pk]))

    assert original.status_code == 200
    assert b"".join(original.streaming_content) == picture()
    assert original["Cache-Control"].startswith("private")
    assert thumbnail["Content-Type"] == "image/jpeg"
    assert PILImage.open(io.BytesIO(b"".join(thumbnail.streaming_content))).format == "JPEG"


def test_it_answers_an_outsider_404(done, charlie, client_for):
    response = client_for(charlie).get(reverse("generator:original", args=[done.pk]))
    assert response.status_code == 404


def test_it_answers_404_when_the_file_has_gone(media_storage, done, alice, client_for):
    media_storage.delete(done.images.get().file.name)
    response = client_for(alice).get(reverse("generator:original", args=[done.pk]))
    assert response.status_code == 404


def test_it_zips_the_selected_images_from_the_storage(media_storage, alice, team, client_for):
    rows = [make_request(alice, team, prompt=p) for p in ("one", "two")]
    response = client_for(alice).post(
        reverse("generator:bulk"), {"ids": [r.pk for r in rows], "action": "zip"}
    )
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == sorted(f"steadyshot-{r.pk}.png" for r in rows)
    assert all(archive.read(name) == picture() for name in archive.namelist())


def test_it_serves_the_api_download_from_the_storage(done, alice, client):
    _, raw = ApiToken.issue(alice, "ci")
    response = client.get(
        f"/api/v1/generations/{done.pk}/image", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == picture()


def test_it_the_api_answers_json_when_the_file_has_gone(media_storage, done, alice, client):
    _, raw = ApiToken.issue(alice, "ci")
    media_storage.delete(done.images.get().file.name)
    response = client.get(
        f"/api/v1/generations/{done.pk}/image", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "file_missing"


def test_it_removes_deleted_images_from_the_storage_after_retention(
    media_storage, settings, done, alice, team
):
    settings.DELETED_RETENTION_DAYS = 7
    kept = make_request(alice, team, prompt="kept")
    gone = _names(done.images.get())
    done.soft_delete()
    GenerationRequest.objects.filter(pk=done.pk).update(deleted=timezone.now() - timedelta(days=8))

    assert purge_deleted().images == 1
    assert not any(media_storage.exists(name) for name in gone)
    assert all(media_storage.exists(name) for name in _names(kept.images.get()))


def test_it_sweeps_files_no_row_points_to_from_the_storage(media_storage, settings, done, team):
    # Issue 13, item 8: the sweep lists the bucket through the Storage API too.
    settings.ORPHAN_FILE_GRACE_MINUTES = 60
    lost = media_storage.save(f"references/{team.id}/2026/12/lost.png", ContentFile(b"x"))
    later = timezone.now() + timedelta(minutes=61)

    assert sweep_orphan_files(now=timezone.now()) == 0
    assert sweep_orphan_files(now=later) == 1
    assert not media_storage.exists(lost)
    assert all(media_storage.exists(name) for name in _names(done.images.get()))


def test_it_keeps_an_uploaded_reference_in_the_storage(
    media_storage, alice, client_for, redis_conn, django_capture_on_commit_callbacks
):
    upload = ContentFile(picture("JPEG"), name="ref.jpg")
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(
            reverse("generator:prompt"), form(prompt="edit this", references=[upload])
        )
    assert response.status_code == 302
    reference = ReferenceImage.objects.get()
    with media_storage.open(reference.file.name) as handle:
        assert handle.read() == picture("JPEG")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_a_worker_process_delivers_into_the_storage_the_web_reads(
    media_storage, workers, alice, team, client_for, django_capture_on_commit_callbacks
):
    """The worker is another process: it reads the reference from the storage and writes
    the image there; this (web) process then streams it."""
    workers.start(1)
    upload = ContentFile(picture(), name="ref.png")
    with django_capture_on_commit_callbacks(execute=True):
        client_for(alice).post(
            reverse("generator:prompt"), form(prompt="a lighthouse", references=[upload])
        )
    request = GenerationRequest.objects.get()
    (row,) = wait_for_all([request], timeout=120)
    assert row.status == Status.SUCCEEDED, workers.output()[-3000:]
    image = row.images.get()
    assert all(media_storage.exists(name) for name in _names(image))
    response = client_for(alice).get(reverse("generator:original", args=[row.pk]))
    assert len(b"".join(response.streaming_content)) == image.bytes


# --- the bucket only --------------------------------------------------------------------


@pytest.fixture
def bucket(settings, seaweedfs):
    return use_bucket(settings, seaweedfs)


def test_it_keeps_every_object_private(bucket, seaweedfs, alice, team):
    done = make_request(alice, team)
    image = done.images.get()
    key = f"{bucket.location}/{image.file.name}"
    assert key in seaweedfs.keys(bucket.location)
    anonymous = httpx.get(f"{seaweedfs.config.endpoint}/{seaweedfs.bucket}/{key}")
    assert anonymous.status_code == 403


def test_it_answers_503_when_the_bucket_does_not_answer(
    bucket, alice, team, client_for, settings, redis_conn
):
    done = make_request(alice, team)
    env = {"AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x"}
    settings.STORAGES = {**settings.STORAGES, "default": media_storage_entry("s3://nowhere", env)}
    client = client_for(alice)

    response = client.get(reverse("generator:original", args=[done.pk]))
    ready = client.get(reverse("readyz"))

    assert response.status_code == 503
    assert "Try again in a minute" in response.content.decode()
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "failed": ["storage"]}
