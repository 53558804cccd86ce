"""Small real images and a private media directory, for the tests of image handling."""

import io

from PIL import Image as PILImage


def picture(fmt="PNG", size=(64, 48), mode="RGB") -> bytes:
    out = io.BytesIO()
    PILImage.new(mode, size, (200, 40, 90) if mode == "RGB" else None).save(out, format=fmt)
    return out.getvalue()


def private_media(settings, tmp_path) -> None:
    """Files under the test's own directory, with caps small enough to test cheaply."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.THUMBNAIL_SIZE = 32
    settings.REFERENCE_MAX_BYTES = 200_000
    settings.REFERENCE_MAX_PIXELS = 1_000_000
