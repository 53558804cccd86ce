"""Deleted images leave storage after the retention period; nothing else does."""

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from generator.models import GenerationRequest, Image, ReferenceImage
from generator.retention import purge_deleted, sweep_orphan_files
from tests.media import picture as png
from tests.media import private_media
from tests.unit.generator.test_views import make_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    private_media(settings, tmp_path)
    settings.DELETED_RETENTION_DAYS = 7


def _reference(team, user) -> ReferenceImage:
    data = png()
    reference = ReferenceImage(
        team=team, uploaded_by=user, mime="image/png", width=64, height=48, bytes=len(data)
    )
    reference.file.save("ref.png", ContentFile(data), save=False)
    reference.save()
    return reference


def _files(image: Image) -> list[str]:
    return [image.file.name, image.thumbnail.name]


def test_it_removes_the_files_of_images_deleted_long_enough_ago(alice, team):
    old, recent, kept = (make_request(alice, team, prompt=p) for p in ("old", "recent", "kept"))
    reference = _reference(team, alice)
    old.references.add(reference)
    storage = old.images.get().file.storage
    old_files = _files(old.images.get())
    old.soft_delete()
    recent.soft_delete()
    GenerationRequest.objects.filter(pk=old.pk).update(deleted=timezone.now() - timedelta(days=8))

    purged = purge_deleted()

    assert (purged.images, purged.references) == (1, 1)
    assert not any(storage.exists(name) for name in old_files)
    assert not storage.exists(reference.file.name)
    assert not Image.objects.filter(request=old).exists()
    # The request itself stays: the ledger and the monitoring history count it.
    assert GenerationRequest.objects.filter(pk=old.pk).exists()
    # Deleted a day ago: still recoverable; never deleted: untouched.
    for row in (recent, kept):
        assert all(storage.exists(name) for name in _files(row.images.get()))
    # Running again finds nothing more to do.
    assert purge_deleted() == type(purged)()


def test_it_keeps_a_reference_image_another_request_still_uses(alice, team):
    gone, rerun = make_request(alice, team, prompt="gone"), make_request(alice, team)
    reference = _reference(team, alice)
    gone.references.add(reference)
    rerun.references.add(reference)
    gone.soft_delete()
    GenerationRequest.objects.filter(pk=gone.pk).update(
        deleted=timezone.now() - timedelta(days=30)
    )

    assert purge_deleted().references == 0
    assert reference.file.storage.exists(reference.file.name)


# --- files no row points to (issue 13, item 8) -------------------------------------------


def test_it_sweeps_stored_files_no_row_points_to_after_the_grace_period(alice, team, settings):
    settings.ORPHAN_FILE_GRACE_MINUTES = 60
    kept = make_request(alice, team)
    reference = _reference(team, alice)
    storage = reference.file.storage
    orphans = [
        storage.save(f"references/{team.id}/2026/12/lost.png", ContentFile(png())),
        storage.save(f"images/{team.id}/2026/12/lost.png", ContentFile(png())),
        storage.save(f"thumbnails/{team.id}/2026/12/lost.webp", ContentFile(b"x")),
    ]
    unrelated = storage.save("readiness-notes.txt", ContentFile(b"not ours"))
    owned = [*_files(kept.images.get()), reference.file.name]

    # Within the grace period a file may still be waiting for its row's commit.
    assert sweep_orphan_files() == 0
    assert all(storage.exists(name) for name in orphans)

    later = timezone.now() + timedelta(minutes=61)
    assert sweep_orphan_files(now=later) == 3
    assert not any(storage.exists(name) for name in orphans)
    assert all(storage.exists(name) for name in owned)
    assert storage.exists(unrelated)
    assert sweep_orphan_files(now=later) == 0


def test_it_sweeps_nothing_from_an_empty_storage(db):
    assert sweep_orphan_files(now=timezone.now() + timedelta(days=1)) == 0


def test_it_runs_the_sweep_from_the_maintenance_cron():
    from config.cron import TASKS

    assert (sweep_orphan_files, 3600, "sweep-orphan-files") in TASKS
