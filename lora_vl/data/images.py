"""Images as the models see them: any mode Pillow reads, decoded to 8-bit RGB with the right colours.

`Image.convert("RGB")` alone is wrong for several modes real datasets contain: 16-bit greyscale
PNGs ("I;16") are clipped to white, float images ("F") to black or white, and transparent pixels
show whatever colour they happen to store. Here those are scaled or composited (onto white, as
image viewers show them); animated images give their first frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lora_vl.data.encode import BadRecord

_INT16 = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(img: Image.Image, where: str = "image") -> Image.Image:
    """`img` as 8-bit RGB. 16-bit greyscale is scaled by 1/257; 32-bit integer greyscale too when
    its values exceed 8 bits; float greyscale in [0, 1] by 255 (else clipped to [0, 255])."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    mode = img.mode
    try:
        if mode in _INT16 or mode == "I":
            a = np.asarray(img, dtype=np.float64)
            scale = 257.0 if mode in _INT16 or a.max(initial=0) > 255 else 1.0
            return Image.fromarray(np.clip(np.rint(a / scale), 0, 255).astype(np.uint8), "L").convert("RGB")
        if mode == "F":
            a = np.asarray(img, dtype=np.float64)
            a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
            return Image.fromarray(np.clip(np.nan_to_num(np.rint(a)), 0, 255).astype(np.uint8), "L").convert("RGB")
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as e:  # an unsupported mode, or decoding fails past the header
        raise BadRecord(f"{where}: cannot decode image (mode {mode}) to RGB: {e}") from e


def open_image_file(path: str | Path, where: str) -> Image.Image:
    """PIL's lazy open (header only), naming the record and file when missing, empty or not an image."""
    path = Path(path)
    if path.is_dir():
        raise BadRecord(f"{where}: image path {path} is a directory; expected an image file")
    if not path.is_file():
        raise BadRecord(f"{where}: image file {path} not found")
    if path.stat().st_size == 0:
        raise BadRecord(f"{where}: image file {path} is empty (0 bytes)")
    try:
        return Image.open(path)
    except Exception as e:  # PIL raises several types for a file that is not an image
        raise BadRecord(f"{where}: image file {path} is not a readable image ({type(e).__name__}: {e})") from e


def load_rgb(image, where: str) -> Image.Image:
    """A path or a PIL image, decoded to RGB (see `to_rgb`)."""
    if isinstance(image, Image.Image):
        return to_rgb(image, where)
    with open_image_file(image, where) as img:
        try:
            img.load()
        except Exception as e:  # decoding errors surface only here (e.g. truncated data)
            raise BadRecord(f"{where}: image file {image} is corrupt: its data cannot be decoded "
                            f"({type(e).__name__}: {e})") from e
        return to_rgb(img, f"{where}: image file {image}")
