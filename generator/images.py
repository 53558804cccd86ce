"""Image bytes in and out: what the upstream delivered, what members upload to edit.

Every image is opened with Pillow before it is kept, whoever sent it: an upstream (or a
sandbox, or a proxy in between) can answer with an HTML error page labelled image/png,
and an upload can be anything. Pixel caps are checked on the header, before decoding,
so a small file that expands to gigabytes (a decompression bomb) is refused cheaply.
"""

import hashlib
import io
import warnings
from dataclasses import dataclass
from uuid import uuid4

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from generator.models import GenerationRequest, Image

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
    thumbnail: bytes  # WebP


def prepare_generated_image(data: bytes, *, thumbnail: bool = True) -> PreparedImage:
    """Decode the upstream's bytes once: the same pixels are checked and thumbnailed
    (unless `thumbnail` is False: add_thumbnail() makes it later, out of the step).
    Raises ImageRejected for anything that is not a whole PNG, JPEG or WebP image."""
    with _decode(data, GENERATED_MAX_PIXELS) as decoded:
        return PreparedImage(
            data=data,
            mime=FORMAT_MIME[decoded.format],
            width=decoded.width,
            height=decoded.height,
            thumbnail=make_thumbnail(decoded) if thumbnail else b"",
        )


def add_thumbnail(image: Image) -> bool:
    """Make the thumbnail of a stored image that has none yet (a delivery makes it after
    its commit); False if it had one already."""
    if image.thumbnail:
        return False
    with image.file.open("rb") as handle:
        data = handle.read()
    with _decode(data, GENERATED_MAX_PIXELS) as decoded:
        thumbnail = make_thumbnail(decoded)
    name = image.file.name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    image.thumbnail.save(f"{name}.webp", ContentFile(thumbnail), save=False)
    image.save(update_fields=["thumbnail"])
    return True


def save_generated_image(request: GenerationRequest, prepared: PreparedImage) -> Image:
    """Keep the delivered image and its thumbnail, once per request.

    Called by the worker inside the transaction that marks the request succeeded; a
    second call for the same request (a duplicate job) returns the existing row."""
    existing = Image.objects.filter(request=request).first()
    if existing is not None:
        return existing
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
        image.thumbnail.save(f"{name}.webp", ContentFile(prepared.thumbnail), save=False)
    image.save()
    return image


def store_generated_image(request: GenerationRequest, data: bytes) -> Image:
    """prepare_generated_image() then save_generated_image(), for callers outside a step."""
    return save_generated_image(request, prepare_generated_image(data))


def validate_reference(uploaded_file) -> tuple[bytes, str]:
    """Read an uploaded reference image and return (data, mime), or raise a
    ValidationError whose message says what is wrong and what is allowed."""
    limit = settings.REFERENCE_MAX_BYTES
    name = getattr(uploaded_file, "name", "") or "The file"
    size = getattr(uploaded_file, "size", None)
    if size is not None and size > limit:
        raise ValidationError(f"{name} is {_mb(size)}; the limit is {_mb(limit)}.")
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
