"""Benchmark: what a thumbnail costs and how close it is to the best one (issue 17).

    .venv/bin/python benchmarks/thumbnails.py

Two test pictures made here (no download): a flat one like the sandbox's, and a busy,
noisy one like a photograph, at 1024 px (1K) and 2048 px (2K). For each way of making
the 512-pixel WebP thumbnail: the CPU time of the resize and of the encoding (best of
7), the bytes, and the PSNR of the decoded thumbnail against Lanczos over the whole
image, unencoded (higher is closer). The product's way is generator.image_check's.
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


def main() -> None:
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
