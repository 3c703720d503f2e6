"""Full-size buffers reused from one module to the next while a dense merge runs.

On CPU a fresh 45M-entry tensor (a 7B MLP delta, 180 MB) costs more in page faults than the
arithmetic on it: glibc serves it by mmap and unmaps it on free, so each module would fault its
deltas in anew. torch has no caching allocator on CPU, so the large buffers of the dense path
(one delta per input) are kept here, in a pool that `reuse` makes active (a 4-layer 7B-shaped TIES merge: 28.2 s
with fresh tensors, 20.7 s with the pages kept; docs/bench_merge.md).
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager

import torch

_active = threading.local()  # each thread its own stack of active pools


def _pools() -> list[dict]:
    if not hasattr(_active, "pools"):
        _active.pools = []
    return _active.pools


@contextmanager
def reuse(pool: dict):
    """Within this block `buffer` hands out views of the buffers in `pool` (a dict the caller keeps
    for as long as the buffers should live, e.g. over the modules of one merge)."""
    _pools().append(pool)
    try:
        yield
    finally:
        _pools().pop()


def buffer(slot: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor of `shape`: within `reuse()` a view of the buffer named `slot` (its
    contents change when `slot` is asked for again), else a fresh tensor."""
    pools = _pools()
    if not pools:
        return torch.empty(shape, dtype=dtype)
    pool, n = pools[-1], math.prod(shape)
    buf = pool.get((slot, dtype))
    if buf is None or buf.numel() < n:
        pool.pop((slot, dtype), None)  # free the smaller one before allocating its successor
        buf = pool[(slot, dtype)] = torch.empty(n, dtype=dtype)
    return buf[:n].view(shape)
