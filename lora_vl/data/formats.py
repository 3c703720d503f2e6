"""The data-format registry: a recipe's `format:` name -> its reader.

A reader registers itself with `@data_format(...)`; the recipe schema's allowed values, its
`--help` text and the error for an unknown name all come from this one dict. Every reader takes
`(path, *, image_folder=None, split="train", revision=None)` and returns `Sample`s (SFT data) or
`PreferencePair`s (DPO data), as its `holds` says.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal


@dataclass(frozen=True)
class DataFormat:
    name: str
    read: Callable
    holds: Literal["samples", "pairs"]
    image_folder: bool   # whether `image_folder` means something to this reader
    help: str


FORMATS: dict[str, DataFormat] = {}


def data_format(name: str, *, holds: Literal["samples", "pairs"], image_folder: bool, help: str):
    def register(read: Callable) -> Callable:
        if name in FORMATS:
            raise ValueError(f"data format {name!r} registered twice")
        FORMATS[name] = DataFormat(name, read, holds, image_folder, help)
        return read
    return register


def names(holds: str | None = None) -> list[str]:
    return sorted(n for n, f in FORMATS.items() if holds is None or f.holds == holds)


def describe() -> str:
    return "; ".join(f"{f.name} ({f.help})" for f in sorted(FORMATS.values(), key=lambda f: f.name))
