"""Image files in and out of storage, through Django's Storage API only (no paths), so
the file system and an S3-compatible bucket behave the same.

Media has no public URL: every view and API endpoint checks access first, then streams
the file with stream() (the bucket is never public, and no link to it leaves the site).
"""

import logging

from django.http import FileResponse, Http404, HttpResponse

log = logging.getLogger("steadyshot.files")

CHUNK = 64 * 1024


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage raises when it cannot be reached: OSError for the file system,
    botocore's errors for a bucket (when django-storages is in use)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - botocore comes with django-storages[s3]
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


STORAGE_ERRORS = _storage_errors()

UNAVAILABLE = (
    "The image store did not answer, so the image cannot be shown right now. "
    "Try again in a minute; the image itself is kept."
)


def stream(field, content_type: str, *, download_name: str = "", max_age: int = 86400):
    """A response that streams `field` (an image, a thumbnail) to a member whose access
    was checked: 404 when the file is gone, 503 when the storage does not answer."""
    try:
        handle = field.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404("The file is missing.") from None
    except STORAGE_ERRORS:
        log.exception("could not open %s", field.name)
        return HttpResponse(UNAVAILABLE, status=503, content_type="text/plain; charset=utf-8")
    response = FileResponse(
        handle,
        content_type=content_type,
        as_attachment=bool(download_name),
        filename=download_name,
    )
    # Private: a shared cache must never hand one team's image to another.
    response["Cache-Control"] = f"private, max-age={max_age}"
    return response


def chunks(field):
    """The bytes of `field` in pieces, opened only when the first piece is wanted: a zip
    of many images holds one file at a time."""
    with field.open("rb") as handle:
        yield from iter(lambda: handle.read(CHUNK), b"")


def read(field) -> bytes:
    with field.open("rb") as handle:
        return handle.read()
