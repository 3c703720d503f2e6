"""Length-grouped batch order and padding collation.

Length grouping (as HF's LengthGroupedSampler, but over whole batches and reproducible per
epoch from the seed): shuffle, cut into mega-batches, sort each by length, slice into
batches, shuffle the batches. Samples of similar length share a batch, so little compute
goes to padding.
"""
from __future__ import annotations

import random

import torch

from lora_vl.data.encode import IGNORE, Encoded


def random_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    idx = list(range(len(lengths)))
    random.Random(seed).shuffle(idx)
    return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int,
                           mega: int = 50) -> list[list[int]]:
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    size = batch_size * mega
    batches = []
    for start in range(0, len(idx), size):
        chunk = sorted(idx[start:start + size], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / padded


def collate(items: list[Encoded | None], pad_id: int) -> dict | None:
    """Right-pad ids (pad) and labels (-100); stack the pixel values of all images in order."""
    items = [x for x in items if x is not None]
    if not items:
        return None
    width = max(len(x.input_ids) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, x in enumerate(items):
        n = len(x.input_ids)
        ids[row, :n] = torch.tensor(x.input_ids)
        labels[row, :n] = torch.tensor(x.labels)
        mask[row, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    pixels = [x.pixel_values for x in items if x.pixel_values is not None]
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
    return batch
