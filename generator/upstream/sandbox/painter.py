"""Paints the sandbox's images: a deterministic picture per (prompt, seed, model), at the
pixel size the real model would deliver, with the prompt and model written on it and
visibly marked as sandbox output. Edits show the first reference image transformed.

PNG for Flash and the OpenAI-compatible models, JPEG for Pro, as the real ones answer.
"""

import functools
import hashlib
import io
import random
import textwrap

from PIL import Image, ImageDraw, ImageFont, ImageOps

# Pixel sizes at 1K (docs/upstream.md); 2K and 4K are x2 and x4 (Pro only).
FLASH_SIZES = {
    "1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "3:2": (1248, 832),
    "2:3": (832, 1248), "4:3": (1184, 864), "3:4": (864, 1184), "4:5": (896, 1152),
    "5:4": (1152, 896), "21:9": (1536, 672),
}  # fmt: skip
PRO_SIZES = {
    "1:1": (1024, 1024), "16:9": (1376, 768), "9:16": (768, 1376), "3:2": (1264, 848),
    "2:3": (848, 1264), "4:3": (1200, 896), "3:4": (896, 1200), "4:5": (928, 1152),
    "5:4": (1152, 928), "21:9": (1584, 672),
}  # fmt: skip
OPENAI_SIZES = {
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "1792x1024",
    "1024x1792",
    "256x256",
    "512x512",
}
SIZE_FACTORS = {"1K": 1, "2K": 2, "4K": 4}


def is_pro(model: str) -> bool:
    # A relay names it with its vendor: "google/gemini-3-pro-image-preview".
    return model.rsplit("/", 1)[-1].startswith("gemini-3")


def pixel_size(model: str, aspect_ratio: str | None, image_size: str | None) -> tuple[int, int]:
    """What the real model delivers: Flash is 1K whatever is asked."""
    ratio = aspect_ratio or "1:1"
    if is_pro(model):
        w, h = PRO_SIZES[ratio]
        factor = SIZE_FACTORS.get(image_size or "1K", 1)
        return w * factor, h * factor
    return FLASH_SIZES[ratio]


def mime_for(model: str) -> str:
    return "image/jpeg" if is_pro(model) else "image/png"


def _rng(prompt: str, seed: int, model: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\0{model}\0{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(30, 226), rng.randrange(30, 226), rng.randrange(30, 226))


def paint(
    prompt: str,
    *,
    model: str,
    size: tuple[int, int],
    seed: int = 0,
    reference: bytes | None = None,
    mime: str | None = None,
) -> bytes:
    """The encoded image for the prompt, the same bytes every time for the same inputs.
    Without a reference it is cached: tests and drills send one prompt hundreds of times,
    and painting (draw, scale, encode) is most of the sandbox's CPU."""
    if reference is None:
        return _paint_cached(prompt, model, size, seed, mime)
    return _paint(prompt, model=model, size=size, seed=seed, reference=reference, mime=mime)


@functools.lru_cache(maxsize=128)
def _paint_cached(prompt: str, model: str, size: tuple[int, int], seed: int, mime: str | None):
    return _paint(prompt, model=model, size=size, seed=seed, mime=mime)


def _paint(
    prompt: str,
    *,
    model: str,
    size: tuple[int, int],
    seed: int = 0,
    reference: bytes | None = None,
    mime: str | None = None,
) -> bytes:
    """The encoded image. Drawn at a small working size and scaled up: a 4K canvas
    would cost seconds of CPU per call for no extra information."""
    width, height = size
    scale = min(1.0, 768 / max(width, height))
    work = (max(1, round(width * scale)), max(1, round(height * scale)))
    rng = _rng(prompt, seed, model)
    canvas = _picture(work, rng) if reference is None else _transformed(reference, work, rng)
    draw = ImageDraw.Draw(canvas)
    unit = max(10, work[1] // 28)
    font = ImageFont.load_default(size=unit)
    # The sandbox mark: a band across the top that no one can mistake for a real image.
    draw.rectangle((0, 0, work[0], unit * 2), fill=(200, 20, 60))
    draw.text((unit // 2, unit // 3), "SANDBOX OUTPUT · not a real model", fill="white", font=font)
    lines = textwrap.wrap(prompt, width=max(16, work[0] // (unit // 2 + 1)))[:6] or [""]
    box_top = work[1] - unit * (len(lines) + 3)
    draw.rectangle((0, box_top, work[0], work[1]), fill=(0, 0, 0))
    y = box_top + unit // 2
    for line in lines:
        draw.text((unit // 2, y), line, fill="white", font=font)
        y += unit + 2
    draw.text((unit // 2, y + 4), f"{model} · seed {seed}", fill=(255, 210, 0), font=font)
    if canvas.size != (width, height):
        canvas = canvas.resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    if (mime or mime_for(model)) == "image/jpeg":
        canvas.convert("RGB").save(out, "JPEG", quality=85)
    else:
        canvas.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _picture(size: tuple[int, int], rng: random.Random) -> Image.Image:
    top, bottom = _colour(rng), _colour(rng)
    gradient = Image.linear_gradient("L").resize(size)
    canvas = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), gradient)
    draw = ImageDraw.Draw(canvas)
    w, h = size
    for _ in range(rng.randrange(4, 9)):
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(max(4, min(w, h) // 20), max(5, min(w, h) // 4))
        shape = rng.choice(("ellipse", "rectangle"))
        getattr(draw, shape)((x - r, y - r, x + r, y + r), fill=_colour(rng), outline="white")
    return canvas


def _transformed(reference: bytes, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """The reference, fitted to the canvas, mirrored and tinted: visibly the same picture,
    visibly edited."""
    try:
        source = Image.open(io.BytesIO(reference))
        source.load()
    except Exception:  # an unreadable reference still gets a picture
        return _picture(size, rng)
    fitted = ImageOps.fit(source.convert("RGB"), size)
    mirrored = ImageOps.mirror(fitted)
    tint = Image.new("RGB", size, _colour(rng))
    return Image.blend(mirrored, tint, 0.3)
