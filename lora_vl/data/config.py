"""Recipe schema of the data section, shared by every training stage."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lora_vl.data import formats, readers, safety_readers  # noqa: F401  (the readers register their formats)
from lora_vl.recipe import AT_LEAST_ONE, POSITIVE, RecipeError, field


@dataclass
class DataSource:
    format: str = field(help="reader, one of: " + formats.describe())
    path: str = field(help="JSON file, local dataset dir/file, or hub dataset id")
    image_folder: str | None = field(None, help="folder that LLaVA JSON image paths are relative to "
                                     "(default: the JSON's folder)")
    split: str = field("train", help="split of an HF dataset")
    revision: str | None = field(None, help="hub revision (commit/tag) to pin (default: lora-vl.lock)",
                                 pins=("dataset", "path"))
    weight: float = field(1.0, help="fraction of this source to use; >1 repeats it (seeded subset)",
                          range=POSITIVE)
    num_samples: int | None = field(None, help="exact number of samples to take instead of weight",
                                   range=AT_LEAST_ONE)
    id_pattern: str | None = field(None, help="keep only the records whose id this regular expression matches "
                                   "(from the start), before weight / num_samples")

    def validate(self, where: str) -> None:
        fmt = formats.FORMATS.get(self.format)
        if fmt is None:
            raise RecipeError(f"{where}.format: unknown data format {self.format!r}; expected one of "
                              f"{formats.names()}")
        if self.id_pattern is not None:
            try:
                re.compile(self.id_pattern)
            except re.error as e:
                raise RecipeError(f"{where}.id_pattern: not a regular expression ({e}): {self.id_pattern!r}") from None
        if self.image_folder is not None and not fmt.image_folder:
            raise RecipeError(f"{where}.image_folder: format {self.format!r} does not read image files "
                              "relative to a folder; remove image_folder")


@dataclass
class DataConfig:
    sources: list[DataSource] = field(help="the mixture: one entry per source")
    max_length: int = field(2048, help="max tokens per sample, image tokens included",
                             range=AT_LEAST_ONE)
    overlong: Literal["drop", "truncate"] = field("drop", help="over-long samples: drop (counted) or truncate after "
                                                  "the image tokens")
    bad_records: Literal["error", "skip"] = field("error", help="a bad record (missing image, no assistant turn, ...): "
                                                  "stop with an error, or skip it and count it")
    seed: int = field(0, help="seed for subsets and batch order")
    chat_format: Literal["model", "plain"] = field(
        "model", help="model: the base model's chat template (model.chat_template when composing); "
        "plain: LLaVA's stage-1 format (<image> then the caption; instruction dropped; loss on the caption)")

    def validate(self, where: str) -> None:
        if not self.sources:
            raise RecipeError(f"{where}.sources: at least one data source is required")
