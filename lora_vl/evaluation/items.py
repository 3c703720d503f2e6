"""The one item type every benchmark reader produces, plus seeded subsetting and image loading."""
from __future__ import annotations

import base64
import binascii
import io
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from lora_vl.data.images import to_rgb
from lora_vl.errors import InputError


class BenchmarkError(InputError):
    """A benchmark could not be read; the message names the benchmark, file or record."""


@dataclass
class EvalItem:
    id: str
    prompt: str
    benchmark: str
    category: str                     # the item's own category inside its benchmark (for breakdowns)
    image: Any = None                 # None or an undecoded image value (see `load_image`)
    reference: str | None = None      # gold answer: a letter for multiple choice, yes/no, ...
    choices: list[str] | None = None  # option texts in letter order, for multiple choice
    meta: dict = field(default_factory=dict)

    @property
    def has_image(self) -> bool:
        return self.image is not None


def seeded_subset(items: list[EvalItem], n: int | None, seed: int) -> list[EvalItem]:
    """`n` units drawn with `seed`, kept in their original order (so subsets nest across n).

    A unit is an item, or an item group (meta['group'], e.g. MME's two questions per image,
    which acc+ needs together)."""
    units = list(dict.fromkeys(it.meta.get("group", it.id) for it in items))
    if n is None or n >= len(units):
        return list(items)
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    keep = {units[i] for i in order[:n]}
    return [it for it in items if it.meta.get("group", it.id) in keep]


def per_category_subset(items: list[EvalItem], n: int | None, seed: int) -> list[EvalItem]:
    """Up to `n` items per category (e.g. MM-SafetyBench: 20 per scenario)."""
    if n is None:
        return list(items)
    groups: dict[str, list[EvalItem]] = {}
    for it in items:
        groups.setdefault(it.category, []).append(it)
    keep = {id(it) for g in groups.values() for it in seeded_subset(g, n, seed)}
    return [it for it in items if id(it) in keep]


# Leading bytes of the image formats benchmarks ship (PNG, JPEG, GIF, BMP, WebP, TIFF): base64 text
# is recognised by what it decodes to, so no string is ever asked of the file system first.
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"RIFF",
                    b"II*\x00", b"MM\x00*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux: a longer string cannot name a file


class ImageValueError(BenchmarkError):
    """An image value that cannot be decoded; `reason` is the same for every item failing the same
    way (results group skipped items by it), the message names the item."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def is_base64_image(text: str) -> bool:
    """Whether `text` is base64 of an image: its first 16 characters decode to a known signature."""
    head = text[:16]
    return len(head) == 16 and _BASE64.fullmatch(head) is not None and \
        base64.b64decode(head).startswith(IMAGE_SIGNATURES)


def _open(value) -> Image.Image:
    """The (lazily opened) PIL image behind one image value, by what the value is: a PIL image,
    bytes, a datasets Image() {bytes, path} dict, base64 text (any length), or a file path. Raises
    `ImageValueError` with the reason."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):  # datasets Image() feature with decode=False: bytes win over path
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(value))
    if isinstance(value, str) and is_base64_image(value):
        try:
            raw = base64.b64decode(value)
        except binascii.Error as e:  # wrong padding: a truncated string
            raise ImageValueError(f"base64 image text is malformed: {e}", "malformed base64 image text") from e
        return _from_bytes(raw)
    if isinstance(value, (str, Path)):
        return _from_file(str(value))
    raise ImageValueError(f"unsupported image value of type {type(value).__name__}",
                          f"unsupported image value type {type(value).__name__}")


def _from_bytes(raw: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(raw))
    except Exception as e:  # PIL raises several types for data that is not an image
        raise ImageValueError(f"{len(raw)} bytes that are not a readable image ({type(e).__name__})",
                              "image data is not a readable image") from e


def _from_file(path: str) -> Image.Image:
    if "://" in path:  # no download at evaluation time: the benchmark's images must be on disk
        raise ImageValueError(f"{path[:120]!r} is a URL; expected a local image file or image data "
                              "(download the benchmark's images first: lora-vl fetch)", "image is a URL")
    if not path or len(path) > MAX_PATH_CHARS or "\x00" in path:
        raise ImageValueError(f"a string of {len(path)} characters that is neither base64 of a known image "
                              f"format nor a file path", "neither base64 image data nor a file path")
    try:
        found = Path(path).is_file()
    except OSError as e:  # e.g. a name component over 255 characters
        raise ImageValueError(f"cannot use {path!r} as a path: {e}", "not a usable image path") from e
    if not found:
        raise ImageValueError(f"file {path} not found", "image file not found")
    try:
        return Image.open(path)
    except Exception as e:  # PIL raises several types for a file that is not an image
        raise ImageValueError(f"file {path} is not a readable image ({type(e).__name__})",
                              "image data is not a readable image") from e


def load_image(item: EvalItem) -> Image.Image:
    """The item's image as RGB (any Pillow mode, see `to_rgb`), decoded now (items hold the
    undecoded value, so a benchmark is never decoded all at once); a missing or broken image
    names the benchmark, item and reason."""
    where = f"{item.benchmark} item {item.id}: image {str(item.image)[:120]!r}"
    try:
        img = _open(item.image)
    except ImageValueError as e:
        raise ImageValueError(f"{where} failed to load: {e}", e.reason) from e
    try:
        img.load()
        return to_rgb(img, where)
    except Exception as e:  # PIL raises several types for data corrupt past the header
        raise ImageValueError(f"{where} failed to load: {e}", "image data is corrupt") from e
