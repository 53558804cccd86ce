"""Is it a whole image? Pillow's checks on bytes, shared by the providers (an answer that
is not a whole image is MALFORMED, before any success is recorded) and by generator.images
(what is kept, what members upload). No Django models here: generator.upstream may import
it (pyproject.toml's import contracts).

Pixel caps are checked on the header, before decoding, so a small file that expands to
gigabytes (a decompression bomb) is refused cheaply; then the whole image is decoded, so
a truncated or garbled one is refused too, whatever its header says.
"""

import io
import logging
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

log = logging.getLogger("steadyshot.images")

# Pillow's format names for the types we accept, and the extension each is stored with.
FORMAT_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MIME_EXTENSION = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
EXTENSION_MIME = {extension: mime for mime, extension in MIME_EXTENSION.items()}

# Generated images: a 4K image at the widest ratio is about 6336×2688 (17 Mpx); the cap
# leaves room for that and refuses anything absurd.
GENERATED_MAX_PIXELS = 64_000_000


class ImageRejected(ValueError):
    """Bytes that are not an image we accept; the message is for a person."""


def inspect(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Return (mime, width, height) of a PNG, JPEG or WebP image, or raise ImageRejected."""
    with _decode(data, max_pixels) as image:
        return FORMAT_MIME[image.format], image.width, image.height


def _decode(data: bytes, max_pixels: int, *, draft_to: int | None = None) -> PILImage.Image:
    """The decoded image (the caller closes it), or raise ImageRejected.

    The header gives the size without decoding; the full decode (verify() and load())
    then proves the pixel data is really there and not truncated. With `draft_to`, a
    JPEG is decoded at the smallest of JPEG's own scales (1/2, 1/4, 1/8) that still
    covers a `draft_to`-pixel thumbnail (Pillow's draft(), as its Image.thumbnail()
    does): libjpeg still reads every coded block, so a truncated or garbled JPEG is
    refused as before, but only about the thumbnail's pixels are made. The image's real
    size is in `.info["full_size"]`; other formats are decoded whole."""
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
            full.info["full_size"] = (width, height)
            if draft_to is not None and fmt == "JPEG":
                full.draft(None, _thumbnail_box(width, height, draft_to))
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


def _thumbnail_box(width: int, height: int, size: int) -> tuple[int, int]:
    """The thumbnail's size for an image of width × height: no side over `size`, the
    ratio kept (make_thumbnail()); a JPEG's draft decode keeps at least this (_decode())."""
    scale = min(1.0, size / max(width, height))
    return (max(1, round(width * scale)), max(1, round(height * scale)))


def _too_many_pixels(width: int, height: int, max_pixels: int) -> str:
    return (
        f"The image is {width}×{height} ({width * height / 1e6:.1f} megapixels); "
        f"the limit is {max_pixels / 1e6:.1f} megapixels."
    )


# WebP's effort, 0 (fastest) to 6: 0 encodes a 512-pixel thumbnail in about a third of
# the time of the default 4, at the same quality for 10-25 % more bytes
# (docs/benchmarks.md, "Cost per image").
THUMBNAIL_WEBP_METHOD = 0
THUMBNAIL_JPEG_QUALITY = 85


def make_thumbnail(source: PILImage.Image) -> bytes:
    """A thumbnail no larger than THUMBNAIL_SIZE on its longer side, keeping the ratio:
    a JPEG, or a WebP when the image has transparency (JPEG has none). A 512-pixel JPEG
    encodes in about a seventh of the time of a WebP even at WebP's fastest effort, for
    1.5-2 times the bytes (tens of KB): the thumbnail was the largest CPU cost of a
    delivery (docs/benchmarks.md, "Cost per image"); thumbnail_mime() says which it is.

    The pixels are first averaged down by the largest whole factor that keeps the
    thumbnail's size (`reducing_gap=1`: a 1024-pixel image is halved in one cheap pass),
    then Lanczos does what is left: Lanczos over the whole image cost 5-10 times more,
    for about 1 dB of PSNR once encoded (docs/benchmarks.md, "Cost per image")."""
    mode = "RGBA" if _has_alpha(source) else "RGB"
    image = source if source.mode == mode else source.convert(mode)
    # Of the image's own size: a JPEG decoded in draft (see _decode) is already smaller.
    target = _thumbnail_box(*source.info.get("full_size", source.size), settings.THUMBNAIL_SIZE)
    if target != image.size:
        image = image.resize(target, PILImage.Resampling.LANCZOS, reducing_gap=1.0)
    out = io.BytesIO()
    if mode == "RGBA":
        image.save(out, format="WEBP", quality=80, method=THUMBNAIL_WEBP_METHOD)
    else:
        image.save(out, format="JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    return out.getvalue()


def thumbnail_mime(data: bytes) -> str:
    """What make_thumbnail() made (or made before: WebP only), from its first bytes."""
    return "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/webp"


def _has_alpha(image: PILImage.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


@dataclass(frozen=True)
class PreparedImage:
    """A delivered image, checked and thumbnailed, not yet stored."""

    data: bytes
    mime: str  # what the bytes really are, whatever the upstream claimed
    width: int
    height: int
    thumbnail: bytes  # JPEG or WebP; empty if it could not be made (or was not asked for)


def prepare_generated_image(data: bytes, *, thumbnail: bool = True) -> PreparedImage:
    """Decode the upstream's bytes once: the same pixels are checked and thumbnailed
    (unless `thumbnail` is False). Raises ImageRejected for anything that is not a whole
    PNG, JPEG or WebP image. A thumbnail that cannot be made is left empty (the delivery
    makes it again from the stored file, and the page shows the image until then): the
    image itself passed its checks."""
    draft_to = settings.THUMBNAIL_SIZE if thumbnail else None
    with _decode(data, GENERATED_MAX_PIXELS, draft_to=draft_to) as decoded:
        width, height = decoded.info["full_size"]
        return PreparedImage(
            data=data,
            mime=FORMAT_MIME[decoded.format],
            width=width,
            height=height,
            thumbnail=_thumbnail_or_nothing(decoded) if thumbnail else b"",
        )


def _thumbnail_or_nothing(decoded: PILImage.Image) -> bytes:
    try:
        return make_thumbnail(decoded)
    except Exception:  # Pillow's modes and encoders: never a reason to refuse the image
        log.exception("thumbnail failed")
        return b""


def thumbnail_of(data: bytes) -> bytes:
    """The thumbnail of a generated image's bytes (ImageRejected if not one)."""
    with _decode(data, GENERATED_MAX_PIXELS, draft_to=settings.THUMBNAIL_SIZE) as decoded:
        return make_thumbnail(decoded)
