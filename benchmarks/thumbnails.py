"""Benchmark: what a thumbnail costs and how close it is to the best one (issue 17).

    .venv/bin/python benchmarks/thumbnails.py

Two test pictures made here (no download): a flat one like the sandbox's, and a busy,
noisy one like a photograph, at 1024 px (1K) and 2048 px (2K). For each way of making
the 512-pixel WebP thumbnail: the CPU time of the resize and of the encoding (best of
7), the bytes, and the PSNR of the decoded thumbnail against Lanczos over the whole
image, unencoded (higher is closer). The product's way is generator.image_check's.

    .venv/bin/python benchmarks/thumbnails.py --answers

What the caller spends on each answer it delivers: generator.image_check's
prepare_generated_image() (decode, check, thumbnail) on the sandbox's answers, Nano
Banana Pro's JPEGs at 1K, 2K and 4K and Nano Banana's 1K PNG, best of 15 CPU times.
Copied into an older checkout, it measures that checkout's code the same way.
"""

import io
import math
import os
import sys
import time
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageStat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

LANCZOS = Image.Resampling.LANCZOS
SIZE = 512


def pictures() -> dict[str, Image.Image]:
    flat = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
    ImageDraw.Draw(flat).text((100, 480), "a lighthouse " * 4, fill=(250, 240, 200))
    base = Image.effect_mandelbrot((1024, 1024), (-2.0, -1.5, 1.0, 1.5), 200).convert("RGB")
    noise = Image.effect_noise((1024, 1024), 60).convert("RGB")
    busy = Image.blend(base, noise, 0.3).filter(ImageFilter.DETAIL)
    return {"flat 1K": flat, "busy 1K": busy, "busy 2K": busy.resize((2048, 2048), LANCZOS)}


def psnr(a: Image.Image, b: Image.Image) -> float:
    stat = ImageStat.Stat(ImageChops.difference(a, b))
    mse = sum(stat.sum2) / (a.width * a.height * 3)
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def best(f, repeat=7):
    times = []
    for _ in range(repeat):
        start = time.process_time()
        result = f()
        times.append(time.process_time() - start)
    return min(times) * 1000, result


def answers() -> None:
    import django

    django.setup()
    from generator.image_check import prepare_generated_image
    from generator.upstream.sandbox.painter import paint, pixel_size

    cases = [
        ("gemini-3-pro-image-preview", "1K"),
        ("gemini-3-pro-image-preview", "2K"),
        ("gemini-3-pro-image-preview", "4K"),
        ("gemini-2.5-flash-image", "1K"),
    ]
    prompt = "a lighthouse on a cliff at dusk, oil painting"
    print(f"{'answer':34} {'KB':>7} {'prepare':>9}")
    for model, size in cases:
        data = paint(prompt, model=model, size=pixel_size(model, "1:1", size))
        ms, prepared = best(lambda d=data: prepare_generated_image(d), repeat=15)
        assert prepared.thumbnail, "no thumbnail made"
        label = f"{model} {size} ({prepared.mime.split('/')[1]})"
        print(f"{label:34} {len(data) / 1024:7.0f} {ms:7.1f}ms")
    print(f"load average: {os.getloadavg()}")


def main() -> None:
    if "--answers" in sys.argv[1:]:
        answers()
        return
    ways = {
        "before: Lanczos, WebP method 4": (None, 4),
        "Lanczos, WebP method 0": (None, 0),
        "reduce + Lanczos, method 4": (1.0, 4),
        "reduce + Lanczos, method 2": (1.0, 2),
        "now: reduce + Lanczos, method 0": (1.0, 0),
    }
    print(f"{'picture':8} {'way':34} {'resize':>8} {'encode':>8} {'KB':>6} {'PSNR':>6}")
    for name, picture in pictures().items():
        picture.load()
        target = (SIZE, SIZE)
        reference = picture.resize(target, LANCZOS)
        for way, (gap, method) in ways.items():
            resize_ms, thumb = best(
                lambda p=picture, g=gap: p.resize((SIZE, SIZE), LANCZOS, reducing_gap=g)
            )

            def encode(t=thumb, m=method):
                out = io.BytesIO()
                t.save(out, format="WEBP", quality=80, method=m)
                return out.getvalue()

            encode_ms, data = best(encode)
            decoded = Image.open(io.BytesIO(data)).convert("RGB")
            print(
                f"{name:8} {way:34} {resize_ms:6.1f}ms {encode_ms:6.1f}ms "
                f"{len(data) / 1024:6.1f} {psnr(decoded, reference):6.2f}"
            )
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
