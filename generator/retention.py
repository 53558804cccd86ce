"""Deleting for real. A member's delete hides a request at once (soft delete, so an
accidental bulk delete can be undone by an operator for a while); after
DELETED_RETENTION_DAYS its image, thumbnail and any reference image no other request
uses are removed from storage and the database. The request row stays, without its
files, because the usage ledger and the monitoring history count it.

A second sweep, sweep_orphan_files(), removes any stored file that no row points to,
once it is older than ORPHAN_FILE_GRACE_MINUTES: what a crash between a file's write and
its row's commit left behind (admission writes uploads only once a submission is
accepted, so a refusal leaves nothing, but a commit can still fail). It lists the
storage through Django's Storage API, so the file system and a bucket are swept alike.

Both run hourly from config/cron.py; idempotent and safe on several machines at once (a
file already gone is simply skipped).
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Q
from django.utils import timezone

from generator.models import Image, ReferenceImage

# The folders the file fields write to (generator/models.py, *_path) and, for each, the
# fields whose rows own its files. Nothing else in the storage is ever looked at.
OWNERS = {
    "references": [(ReferenceImage, "file")],
    "images": [(Image, "file")],
    "thumbnails": [(Image, "thumbnail")],
}

log = logging.getLogger("steadyshot.retention")


@dataclass
class Purged:
    images: int = 0
    references: int = 0


def purge_deleted(now=None) -> Purged:
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.DELETED_RETENTION_DAYS)
    purged = Purged()
    for image in Image.objects.filter(request__deleted__lt=cutoff).iterator():
        purged.images += _delete_with_files(image, image.file, image.thumbnail)
    # A reference image is shared by a batch and its re-runs: it goes when no request
    # that is still visible, or deleted only recently, uses it.
    in_use = Q(requests__deleted=None) | Q(requests__deleted__gte=cutoff)
    orphans = ReferenceImage.objects.filter(requests__deleted__lt=cutoff).exclude(
        pk__in=ReferenceImage.objects.filter(in_use).values("pk")
    )
    for reference in orphans.distinct().iterator():
        purged.references += _delete_with_files(reference, reference.file)
    if purged.images or purged.references:
        log.info(
            "purged the files of deleted requests: %s images, %s reference images",
            purged.images,
            purged.references,
        )
    return purged


def _delete_with_files(row, *files) -> bool:
    """Delete `row`, then its files; whether this call deleted the row. Database row
    first: if the process dies between the two, a file without a row is harmless, a row
    without a file would be a broken gallery card."""
    names = [(f.storage, f.name) for f in files if f]
    deleted = bool(type(row).objects.filter(pk=row.pk).delete()[0])
    for storage, name in names:
        storage.delete(name)
    return deleted


def sweep_orphan_files(now=None, storage=None) -> int:
    """Delete every file under OWNERS' folders that no row names and that was last written
    more than ORPHAN_FILE_GRACE_MINUTES ago (a younger one may belong to a transaction
    still open); the number deleted."""
    now = now or timezone.now()
    storage = storage or default_storage
    cutoff = now - timedelta(minutes=settings.ORPHAN_FILE_GRACE_MINUTES)
    removed = 0
    for folder, owners in OWNERS.items():
        for names in _files_by_folder(storage, folder):
            owned = set()
            for model, field in owners:
                owned.update(
                    model.objects.filter(**{f"{field}__in": names}).values_list(field, flat=True)
                )
            for name in names:
                if name in owned or _modified(storage, name) > cutoff:
                    continue
                storage.delete(name)
                removed += 1
    if removed:
        log.info("removed %s stored files that no row points to", removed)
    return removed


def _files_by_folder(storage, folder: str):
    """The file names under `folder`, one list per directory (a bounded query each)."""
    try:
        directories, files = storage.listdir(folder)
    except FileNotFoundError:
        return
    if files:
        yield [f"{folder}/{name}" for name in files]
    for directory in directories:
        yield from _files_by_folder(storage, f"{folder}/{directory}")


def _modified(storage, name: str):
    try:
        return storage.get_modified_time(name)
    except FileNotFoundError:
        return timezone.now()  # gone meanwhile: nothing to do
