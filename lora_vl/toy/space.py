"""The prompt space and its seeded split into training and held-out cells.

A cell is (family, row, column): a topic (or fact, or object) crossed with a phrasing (or
layout, or colour x count). Per row, a seeded fraction of the columns is for training; the
rest is held out and only the benchmarks use it. Every training file draws from `train`
cells, every benchmark from `held_out` cells, and `Split.check` refuses any overlap, so no
benchmark prompt was ever trained on (not in pretraining, alignment, VL or safety data).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from lora_vl.toy import lexicon as L

Cell = tuple[str, str, str]   # (family, row, column)

# fraction of each row's columns used for training
TRAIN_FRACTION = {"ask": 0.4, "image_ask": 0.35, "typo": 0.4, "fact": 0.6, "visual": 0.75}


def _families() -> dict[str, dict[str, list[str]]]:
    """family -> row -> its columns."""
    visual_cols = [f"{c}/{n}" for c in L.COLORS for n in L.COUNTS]
    facts = {f"use:{o.name}": [str(i) for i in range(len(L.FACT_ASKS["use"]))] for o in L.OBJECTS}
    facts |= {f"kind:{o.name}": [str(i) for i in range(len(L.FACT_ASKS["kind"]))] for o in L.OBJECTS}
    facts |= {f"sum:{x}+{y}": [str(i) for i in range(len(L.FACT_ASKS["sum"]))] for x in range(10) for y in range(10)}
    return {
        "ask": {t: [str(i) for i in range(len(L.ASK_PHRASINGS))] for t in L.TOPICS},
        "image_ask": {t.act: [str(i) for i in range(len(L.IMAGE_ASKS["make"]))]
                      for t in L.TOPICS.values() if t.obj is not None},
        "typo": {t: [str(i) for i in range(len(L.TYPO_LAYOUTS))] for t in L.TOPICS},
        "fact": facts,
        "visual": {o.name: visual_cols for o in L.OBJECTS},
    }


@dataclass
class Split:
    seed: int
    train: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    held_out: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def columns(self, family: str, row: str, held_out: bool = False) -> list[str]:
        return (self.held_out if held_out else self.train)[family][row]

    def cells(self, held_out: bool) -> set[Cell]:
        part = self.held_out if held_out else self.train
        return {(f, r, c) for f, rows in part.items() for r, cols in rows.items() for c in cols}

    def check(self, used_train: set[Cell], used_eval: set[Cell]) -> None:
        """Cells actually written to training files vs benchmarks: disjoint, and each on its side."""
        leak = used_train & used_eval
        if leak:
            raise AssertionError(f"toy world: {len(leak)} benchmark cells also in training data, "
                                 f"e.g. {sorted(leak)[:3]}")
        stray = used_eval - self.cells(held_out=True)
        if stray:
            raise AssertionError(f"toy world: benchmark cells outside the held-out split, e.g. {sorted(stray)[:3]}")
        stray = used_train - self.cells(held_out=False)
        if stray:
            raise AssertionError(f"toy world: training cells outside the training split, e.g. {sorted(stray)[:3]}")

    def as_json(self) -> dict:
        return {"seed": self.seed, "train_fraction": TRAIN_FRACTION, "train": self.train, "held_out": self.held_out}


def make_split(seed: int) -> Split:
    """Per row, a seeded choice of training columns; every column is a training column of some row."""
    rng = random.Random(f"toy-split-{seed}")
    split = Split(seed)
    for family, rows in _families().items():
        split.train[family], split.held_out[family] = {}, {}
        for row, cols in rows.items():
            order = cols[:]
            rng.shuffle(order)
            k = max(1, round(TRAIN_FRACTION[family] * len(cols)))
            split.train[family][row] = sorted(order[:k], key=cols.index)
            split.held_out[family][row] = sorted(order[k:], key=cols.index)
    return split


class Ledger:
    """Records which cells the writers used, for `Split.check`."""

    def __init__(self):
        self.train: set[Cell] = set()
        self.eval: set[Cell] = set()

    def use(self, cell: Cell, held_out: bool) -> None:
        (self.eval if held_out else self.train).add(cell)
