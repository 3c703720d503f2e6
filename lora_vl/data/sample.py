"""The one sample type every reader produces."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from lora_vl.data.encode import BadRecord


@dataclass
class Sample:
    id: str
    messages: list[dict]          # [{"role": ..., "content": str with <image> placeholders}]
    images: list[Any] = field(default_factory=list)   # file paths or PIL images
    source: str = ""

    @property
    def where(self) -> str:
        return f"{self.source} record {self.id!r}"


def _open_lazy(image, where: str) -> Image.Image:
    """PIL's lazy open (header only), naming the record and file when missing or not an image."""
    path = Path(image)
    if not path.is_file():
        raise BadRecord(f"{where}: image file {path} not found")
    try:
        return Image.open(path)
    except Exception as e:  # PIL raises several types for bad files
        raise BadRecord(f"{where}: image file {path} is corrupt or not an image ({e})") from e


def check_image_header(image, where: str) -> None:
    _open_lazy(image, where).close()


def open_image(image: Any, where: str) -> Image.Image:
    """Load one image as RGB, naming the record and file when it is missing or corrupt."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with _open_lazy(image, where) as img:
        try:
            return img.convert("RGB")
        except Exception as e:  # decoding errors surface only here (e.g. truncated data)
            raise BadRecord(f"{where}: image file {image} is corrupt or not an image ({e})") from e
