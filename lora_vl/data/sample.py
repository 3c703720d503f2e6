"""The one sample type every reader produces."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    id: str
    messages: list[dict]          # [{"role": ..., "content": str with <image> placeholders}]
    images: list[Any] = field(default_factory=list)   # file paths or PIL images
    source: str = ""

    @property
    def where(self) -> str:
        return f"{self.source} record {self.id!r}"
