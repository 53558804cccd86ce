"""Image bytes in and out: what the upstream delivered, what members upload to edit.

Every image is opened with Pillow before it is kept, whoever sent it: an upstream (or a
sandbox, or a proxy in between) can answer with an HTML error page labelled image/png,
and an upload can be anything. The checks themselves are generator.image_check's, which
the providers share; this module writes what passed them to storage.
"""

import hashlib
import io
from contextlib import contextmanager
from uuid import uuid4

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from PIL import Image as PILImage

from generator.image_check import (
    MIME_EXTENSION,
    ImageRejected,
    PreparedImage,
    inspect,
    prepare_generated_image,
    thumbnail_mime,
    thumbnail_of,
)
from generator.models import GenerationRequest, Image, ReferenceImage

# Callers of this module use these as its own (batching, the tests).
__all__ = ["ImageRejected", "inspect", "prepare_generated_image"]


def thumbnail_name(name: str, thumbnail: bytes) -> str:
    return f"{name}.{MIME_EXTENSION[thumbnail_mime(thumbnail)]}"


def add_thumbnail(image: Image) -> bool:
    """Make the thumbnail of a stored image that has none yet (a delivery whose caller
    did not make it makes it after its commit); False if it had one already."""
    if image.thumbnail:
        return False
    with image.file.open("rb") as handle:
        data = handle.read()
    thumbnail = thumbnail_of(data)
    name = image.file.name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    image.thumbnail.save(thumbnail_name(name, thumbnail), ContentFile(thumbnail), save=False)
    image.save(update_fields=["thumbnail"])
    return True


@contextmanager
def delivering(request: GenerationRequest, prepared: PreparedImage):
    """Write the delivered image and its thumbnail to storage, then yield their row,
    unsaved, for the block to save in the transaction that ends the request:

        with delivering(request, prepared) as image, transaction.atomic():
            if request.finish(...):  # the request's row, the team's quota counters
                image.save()

    so that transaction holds its locks for database statements only, never while
    storage writes (on S3, tens of milliseconds a file, while a team's admissions wait
    for its month's counter). Files whose row the block did not save, or whose block
    raised, are deleted; those of a process that died in between are the orphan
    sweep's (generator.retention)."""
    image = Image(
        request=request,
        team_id=request.team_id,
        width=prepared.width,
        height=prepared.height,
        mime=prepared.mime,
        bytes=len(prepared.data),
        sha256=hashlib.sha256(prepared.data).hexdigest(),
    )
    name = uuid4().hex
    image.file.save(
        f"{name}.{MIME_EXTENSION[prepared.mime]}", ContentFile(prepared.data), save=False
    )
    if prepared.thumbnail:
        thumbnail = prepared.thumbnail
        image.thumbnail.save(thumbnail_name(name, thumbnail), ContentFile(thumbnail), save=False)
    kept = False
    try:
        yield image
        kept = not image._state.adding
    finally:
        if not kept:
            for field in (image.file, image.thumbnail):
                if field:
                    field.storage.delete(field.name)


def save_generated_image(request: GenerationRequest, prepared: PreparedImage) -> Image:
    """Keep the delivered image and its thumbnail, once per request: a second call for
    the same request returns the existing row. (A step's delivery uses delivering().)"""
    existing = Image.objects.filter(request=request).first()
    if existing is not None:
        return existing
    with delivering(request, prepared) as image:
        image.save()
    return image


def store_generated_image(request: GenerationRequest, data: bytes) -> Image:
    """prepare_generated_image() then save_generated_image(), for callers outside a step."""
    return save_generated_image(request, prepare_generated_image(data))


def store_references(user, team, uploads: list[tuple[bytes, str]]) -> list[ReferenceImage]:
    """Write checked uploads, (bytes, mime), to storage with a row each. All or nothing:
    if one cannot be written, those already written are removed and the error raised."""
    stored: list[ReferenceImage] = []
    try:
        for content, mime in uploads:
            stored.append(_store_reference(user, team, content, mime))
    except BaseException:
        for reference in stored:
            reference.file.storage.delete(reference.file.name)
        raise
    return stored


def _store_reference(user, team, content: bytes, mime: str) -> ReferenceImage:
    width, height = reference_dimensions(content)
    reference = ReferenceImage(
        team=team,
        uploaded_by=user,
        mime=mime,
        width=width,
        height=height,
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )
    name = f"{reference.id.hex}.{MIME_EXTENSION[mime]}"
    reference.file.save(name, ContentFile(content), save=False)
    reference.save()
    return reference


def validate_reference(uploaded_file) -> tuple[bytes, str]:
    """Read an uploaded reference image and return (data, mime), or raise a
    ValidationError whose message says what is wrong and what is allowed."""
    limit = settings.REFERENCE_MAX_BYTES
    name = getattr(uploaded_file, "name", "") or "The file"
    size = getattr(uploaded_file, "size", None)
    if size is not None and size > limit:
        size_text, limit_text = _mb(size), _mb(limit)
        if size_text == limit_text:  # "10.0 MB; the limit is 10.0 MB" says nothing
            size_text, limit_text = f"{size:,} bytes", f"{limit:,} bytes"
        raise ValidationError(f"{name} is {size_text}, over the limit of {limit_text}.")
    # Read at most one byte past the limit: the size an upload claims is not trusted.
    data = uploaded_file.read(limit + 1)
    if len(data) > limit:
        raise ValidationError(f"{name} is larger than {_mb(limit)}.")
    try:
        mime, _, _ = inspect(data, settings.REFERENCE_MAX_PIXELS)
    except ImageRejected as exc:
        raise ValidationError(f"{name}: {exc}") from exc
    return data, mime


def reference_dimensions(data: bytes) -> tuple[int, int]:
    with PILImage.open(io.BytesIO(data)) as probe:
        return probe.size


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"
