"""Deleting for real. A member's delete hides a request at once (soft delete, so an
accidental bulk delete can be undone by an operator for a while); after
DELETED_RETENTION_DAYS its image, thumbnail and any reference image no other request
uses are removed from storage and the database. The request row stays, without its
files, because the usage ledger and the monitoring history count it.

Run hourly from config/cron.py; idempotent and safe on several machines at once (a file
already gone is simply skipped).
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from generator.models import Image, ReferenceImage

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
