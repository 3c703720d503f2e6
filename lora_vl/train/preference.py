"""Preference pairs as a training set the shared loop can drive.

A `TrainSet` of pairs: the first pass reads the recipe's sources (seeded subsets), checks every
pair (images present, non-empty and distinct answers) and measures it; bad pairs stop the run
or are skipped and counted, per `bad_records`. A batch of B pairs collates to 2B rows — the B
chosen conversations, then the B rejected ones — which `dpo.DpoLoss` splits in half.
"""
from __future__ import annotations

from lora_vl.data.config import DataConfig
from lora_vl.data.batching import collate
from lora_vl.data.dataset import TrainSet, read_sources
from lora_vl.data.encode import BadRecord, Encoded, encode_chat
from lora_vl.data.safety_readers import PreferencePair
from lora_vl.data.images import load_rgb


def check_pair(p: PreferencePair) -> None:
    if not p.chosen.strip() or not p.rejected.strip():
        raise BadRecord(f"{p.where}: empty {'chosen' if not p.chosen.strip() else 'rejected'} response")
    if p.chosen.strip() == p.rejected.strip():
        raise BadRecord(f"{p.where}: chosen and rejected responses are identical; nothing to prefer")


class PairSet(TrainSet):
    """TrainSet's admission, skip counting and item access, over pairs instead of samples."""

    def __init__(self, cfg: DataConfig, processor, **check):
        """`check`: TrainSet's `cache` and `workers`."""
        super().__init__(cfg, processor, records=read_sources(cfg, holds="pairs"), **check)

    def _judge_many(self, records: list) -> list:
        return [self._judge(p) for p in records]

    def encode(self, p: PreferencePair, with_pixels: bool = True) -> tuple[Encoded, Encoded]:
        check_pair(p)
        images = [load_rgb(i, p.where) for i in p.images] if with_pixels else [None] * len(p.images)
        return tuple(
            encode_chat(self.processor,
                        [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": answer}],
                        images, max_length=self.cfg.max_length, truncate=self.cfg.overlong == "truncate",
                        where=p.where, with_pixels=with_pixels)
            for answer in (p.chosen, p.rejected))

    def length(self, pair: tuple[Encoded, Encoded]) -> int:
        return max(len(e.input_ids) for e in pair)

    def collate(self, items: list) -> dict | None:
        """B pairs → 2B rows: chosen rows first, then rejected rows (images in the same order)."""
        items = [x for x in items if x is not None]
        if not items:
            return None
        return collate([c for c, _ in items] + [r for _, r in items], self.pad_id)
