"""The one item type every benchmark reader produces, plus seeded subsetting and image loading."""
from __future__ import annotations

import base64
import io
import random
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
    image: Any = None                 # None, a file path, a PIL image, or base64 text
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


def _decode(img) -> Image.Image:
    """The PIL image behind an item's image value (a PIL image, HF bytes/path dict, path, base64)."""
    if isinstance(img, Image.Image):
        return img
    if isinstance(img, dict) and img.get("bytes"):  # datasets Image() feature, decode=False
        return Image.open(io.BytesIO(img["bytes"]))
    if isinstance(img, dict) and img.get("path"):
        img = img["path"]
    if isinstance(img, (str, Path)) and Path(img).is_file():
        return Image.open(img)
    if isinstance(img, str) and len(img) > 64:  # MMBench TSV stores images as base64 text
        return Image.open(io.BytesIO(base64.b64decode(img)))
    raise FileNotFoundError("not found")


def load_image(item: EvalItem) -> Image.Image:
    """The item's image as RGB (any Pillow mode, see `to_rgb`); a missing or broken image names
    the benchmark and item."""
    where = f"{item.benchmark} item {item.id}: image {str(item.image)[:120]!r}"
    try:
        img = _decode(item.image)
        img.load()
        return to_rgb(img, where)
    except Exception as e:  # PIL raises several types for a corrupt file
        raise BenchmarkError(f"{where} failed to load: {e}") from e
