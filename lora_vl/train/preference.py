"""Preference pairs as a training set the shared loop can drive.

A `TrainSet` of pairs: the first pass reads the recipe's sources (seeded subsets), checks every pair
(images present, non-empty and distinct answers) and measures it; bad pairs stop the run or
are skipped and counted, per `bad_records`.

The loop collates items one row each, so a pair travels as ONE row: the chosen conversation
and the rejected one, each right-padded to the pair's width, side by side. `dpo.split_pairs`
cuts each row back in half. Padding inside a half sits after that half's real tokens, and a
causal LM's log-probabilities of earlier tokens cannot see later ones, so it changes nothing.
"""
from __future__ import annotations

import random

from tqdm.auto import tqdm

from lora_vl.data.config import DataConfig
from lora_vl.data.dataset import DataReport, TrainSet, draw_subset
from lora_vl.data.encode import IGNORE, BadRecord, Encoded, encode_chat
from lora_vl.data.safety_readers import PREFERENCE_READERS, PreferencePair
from lora_vl.data.sample import open_image


def read_pairs(cfg: DataConfig) -> list[PreferencePair]:
    rng = random.Random(cfg.seed)
    out = []
    for src in cfg.sources:
        if src.format not in PREFERENCE_READERS:
            raise BadRecord(f"data source {src.path}: format {src.format!r} holds no preference pairs; "
                            f"expected one of {sorted(PREFERENCE_READERS)}")
        out += draw_subset(PREFERENCE_READERS[src.format](src.path, src.split, src.revision), src, rng)
    return out


def check_pair(p: PreferencePair) -> None:
    if not p.chosen.strip() or not p.rejected.strip():
        raise BadRecord(f"{p.where}: empty {'chosen' if not p.chosen.strip() else 'rejected'} response")
    if p.chosen.strip() == p.rejected.strip():
        raise BadRecord(f"{p.where}: chosen and rejected responses are identical; nothing to prefer")


def pair_row(chosen: Encoded, rejected: Encoded, pad_id: int) -> Encoded:
    width = max(len(chosen.input_ids), len(rejected.input_ids))
    ids, labels = [], []
    for e in (chosen, rejected):
        pad = width - len(e.input_ids)
        ids += e.input_ids + [pad_id] * pad
        labels += e.labels + [IGNORE] * pad
    return Encoded(ids, labels, chosen.pixel_values, chosen.n_images)


class PairSet(TrainSet):
    """TrainSet's admission, skip counting and item access, over pairs instead of samples."""

    def __init__(self, cfg: DataConfig, processor):
        self.cfg, self.processor = cfg, processor
        self.pad_id = processor.tokenizer.pad_token_id
        self.report = DataReport()
        self.samples: list[PreferencePair] = []
        self.lengths: list[int] = []
        for p in tqdm(read_pairs(cfg), desc="checking pairs", unit="pair", leave=False):
            self._admit(p)
        if not self.samples:
            raise BadRecord(f"no usable preference pairs in the data mixture ({self.report.as_dict()})")

    def encode(self, p: PreferencePair, with_pixels: bool = True) -> Encoded:
        check_pair(p)
        images = [open_image(i, p.where) for i in p.images] if with_pixels else [None] * len(p.images)
        halves = []
        for answer in (p.chosen, p.rejected):
            messages = [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": answer}]
            halves.append(encode_chat(self.processor, messages, images, max_length=self.cfg.max_length,
                                      truncate=self.cfg.overlong == "truncate", where=p.where,
                                      with_pixels=with_pixels))
        return pair_row(*halves, self.pad_id)
