"""Photo-like images at real benchmark sizes, for fixtures and benchmarks of image reading.

Real photos compress badly: JPEG/PNG of a 336-1024 px photo is tens to hundreds of KB, so its
base64 text runs far past any file-name limit. Smooth colour fields alone compress to a few KB;
these add textured blobs and sensor-like noise so the encoded size lands where photos do.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_like(width: int, height: int, seed: int, noise: float = 12.0) -> Image.Image:
    """An RGB image with gradients, soft blobs and per-pixel noise (std `noise` grey levels). The
    smooth part is drawn at 1/8 size and upscaled (it is smooth), which keeps this fast."""
    rng = np.random.default_rng(seed)
    h, w = max(1, height // 8), max(1, width // 8)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    small = np.empty((h, w, 3), np.float32)
    for c in range(3):
        small[..., c] = rng.uniform(60, 190) + rng.uniform(-1.5, 1.5) * x + rng.uniform(-1.5, 1.5) * y
    for _ in range(12):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h) + 0.5
        small += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None] * rng.uniform(-80, 80, 3)
    smooth = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8), "RGB").resize((width, height), Image.BILINEAR)
    pixels = np.asarray(smooth, np.int16) + rng.normal(0, noise, (height, width, 3)).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encoded(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """`img` as JPEG (at `quality`) or PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()
