"""Micro-batches built ahead of the step that needs them, in DataLoader worker processes.

Encoding, image decoding and collation run in `workers` processes (0: in the training process
itself, as before), in the order given, so training computes exactly what it would without them.
A worker's copy of the training set counts the records it skips; those counts travel back with
the batch into the training process's report. A bad record under `bad_records: error` travels
back as the exception itself and is raised here, its one-line message intact (torch would wrap
an exception raised inside a worker in its own type and traceback).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from lora_vl.data.encode import BadRecord


@dataclass
class Fetched:
    batch: dict | None
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    error: BadRecord | None = None


class _MicroBatches(Dataset):
    """Item = a micro-batch's index list → its collated batch (None if every record was skipped)."""

    def __init__(self, trainset):
        self.trainset = trainset

    def __getitem__(self, indices: list[int]) -> Fetched:
        ts = self.trainset
        try:
            batch = ts.collate([ts[i] for i in indices])
        except BadRecord as e:
            return Fetched(None, error=e)
        report = getattr(ts, "report", None)  # a TrainSet counts skips; a plain corpus has none
        return Fetched(batch, *report.take_batch_skips()) if report is not None else Fetched(batch)


def _as_is(fetched: Fetched) -> Fetched:
    return fetched


def micro_batches(trainset, order: Iterable[list[int]], workers: int) -> Iterator[dict | None]:
    """The collated micro-batches of `order` (index lists), in that order; None where every record
    of one was skipped. Prefetches 2 per worker."""
    loader = DataLoader(_MicroBatches(trainset), sampler=order, batch_size=None, num_workers=workers,
                        collate_fn=_as_is, generator=torch.Generator())  # never draws from the global RNG
    report = getattr(trainset, "report", None)
    for f in loader:
        if f.error is not None:
            raise f.error
        if report is not None:
            report.add_batch_skips(f.skipped, f.examples)
        yield f.batch
