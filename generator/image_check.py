"""Is it a whole image? Pillow's checks on bytes, shared by the providers (an answer that
is not a whole image is MALFORMED, before any success is recorded) and by generator.images
(what is kept, what members upload). No Django models here: generator.upstream may import
it (pyproject.toml's import contracts).

Pixel caps are checked on the header, before decoding, so a small file that expands to
gigabytes (a decompression bomb) is refused cheaply; then the whole image is decoded, so
a truncated or garbled one is refused too, whatever its header says.
"""

import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

# Pillow's format names for the types we accept, and the extension each is stored with.
FORMAT_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MIME_EXTENSION = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

# Generated images: a 4K image at the widest ratio is about 6336×2688 (17 Mpx); the cap
# leaves room for that and refuses anything absurd.
GENERATED_MAX_PIXELS = 64_000_000


class ImageRejected(ValueError):
    """Bytes that are not an image we accept; the message is for a person."""


def inspect(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Return (mime, width, height) of a PNG, JPEG or WebP image, or raise ImageRejected."""
    with _decode(data, max_pixels) as image:
        return FORMAT_MIME[image.format], image.width, image.height


def _decode(data: bytes, max_pixels: int) -> PILImage.Image:
    """The decoded image (the caller closes it), or raise ImageRejected.

    The header gives the size without decoding; the full decode (verify() and load())
    then proves the pixel data is really there and not truncated."""
    if not data:
        raise ImageRejected("The file is empty.")
    with warnings.catch_warnings():
        # Pillow warns between its limit and twice it; we want one clear error instead.
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        try:
            with PILImage.open(io.BytesIO(data)) as probe:
                fmt = probe.format
                width, height = probe.size
                if fmt not in FORMAT_MIME:
                    raise ImageRejected(
                        f"{fmt or 'This'} images are not accepted; use PNG, JPEG or WebP."
                    )
                if width * height > max_pixels:
                    raise ImageRejected(_too_many_pixels(width, height, max_pixels))
                probe.verify()
            # verify() leaves the image unusable; a second open decodes the pixels.
            full = PILImage.open(io.BytesIO(data))
            full.load()
        except ImageRejected:
            raise
        except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
            raise ImageRejected(
                "The image has too many pixels to be processed safely "
                "(it looks like a decompression bomb)."
            ) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(
                "The file is not a readable image (PNG, JPEG or WebP), or it is damaged."
            ) from exc
    return full


def _too_many_pixels(width: int, height: int, max_pixels: int) -> str:
    return (
        f"The image is {width}×{height} ({width * height / 1e6:.1f} megapixels); "
        f"the limit is {max_pixels / 1e6:.1f} megapixels."
    )


def make_thumbnail(source: PILImage.Image) -> bytes:
    """A WebP no larger than THUMBNAIL_SIZE on its longer side, keeping the ratio."""
    size = settings.THUMBNAIL_SIZE
    thumb = source.convert("RGBA" if _has_alpha(source) else "RGB")
    thumb.thumbnail((size, size), PILImage.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, format="WEBP", quality=80, method=4)
    return out.getvalue()


def _has_alpha(image: PILImage.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


@dataclass(frozen=True)
class PreparedImage:
    """A delivered image, checked and thumbnailed, not yet stored."""

    data: bytes
    mime: str  # what the bytes really are, whatever the upstream claimed
    width: int
    height: int
    thumbnail: bytes  # WebP; empty until the delivery has committed


def prepare_generated_image(data: bytes, *, thumbnail: bool = True) -> PreparedImage:
    """Decode the upstream's bytes once: the same pixels are checked and thumbnailed
    (unless `thumbnail` is False: a delivery makes it after its commit, thumbnail_of()).
    Raises ImageRejected for anything that is not a whole PNG, JPEG or WebP image."""
    with _decode(data, GENERATED_MAX_PIXELS) as decoded:
        return PreparedImage(
            data=data,
            mime=FORMAT_MIME[decoded.format],
            width=decoded.width,
            height=decoded.height,
            thumbnail=make_thumbnail(decoded) if thumbnail else b"",
        )


def thumbnail_of(data: bytes) -> bytes:
    """The WebP thumbnail of a generated image's bytes (ImageRejected if not one)."""
    with _decode(data, GENERATED_MAX_PIXELS) as decoded:
        return make_thumbnail(decoded)
