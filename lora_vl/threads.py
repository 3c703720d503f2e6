"""One torch thread for many small CPU problems: with several intra-op threads on 2 cores, they
mostly wait on each other, worst when another process shares the cores (measured: one tiny float64
op 150 µs with 2 threads vs 9 µs with 1; this torch build's MKL eigh of a 192 x 192 matrix
0.01-1.5 s with 2 threads, erratically, vs 4-16 ms with 1)."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Run the block with one torch thread; the caller's count is restored, also on an error."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
