"""Compiled CPU loops (numba) for the dense merges' elementwise work: exact magnitude thresholds,
TIES's trim + sign election + disjoint mean in one pass over memory, and ||M||².

Written here because torch has no fused multi-input elementwise kernel on CPU short of
torch.compile, which needs a C++ toolchain at run time. Op by op, TIES made ~17 passes over each
block: 0.10 s per 11008 x 4096 pair, this 0.027 s. The exact k-th largest |τ| of such a pair took
0.20 s with numpy's introselect, this radix select 0.05 s (docs/bench_merge.md). The elementwise
loops use branch-free selects and `error_model="numpy"` (a float division needs no zero check),
so that LLVM vectorises them. numba compiles them on first use (~5 s) and caches them next to
this file.
"""
from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

_JIT = dict(error_model="numpy", cache=True, nogil=True)
# Entries per sub-block of the TIES loop: the inputs' slices and three scratch rows stay in the
# L2 cache across the loop's passes (2^11 to 2^16 timed alike, within a busy machine's noise).
BLOCK = 1 << 13


def _threads() -> int:
    """Follow torch's thread count (a user's torch.set_num_threads applies to these loops too)."""
    n = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    return n


# ---- exact k-th largest magnitude: radix select on the bit patterns --------------------------
# For non-negative IEEE floats the order of the values is the order of their bit patterns, so the
# k-th largest |x| is found digit by digit: count the top 16 bits of every |x|, find the bucket
# that holds the k-th largest, then count the next bits of the entries in that bucket, and so on.
# Exact, ties included; NaN patterns sort above +inf, as numpy.sort puts NaN last.

@njit(**_JIT)
def _digit_counts(bits, sign_off, top_shift, prefix, shift, digit_mask, counts):
    for i in range(bits.size):
        v = bits[i] & sign_off
        if (v >> top_shift) == prefix:
            counts[(v >> shift) & digit_mask] += 1


@njit(parallel=True, **_JIT)
def _digit_counts_parallel(bits, sign_off, top_shift, prefix, shift, digit_mask, counts):
    chunks, n = counts.shape[0], bits.size
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        _digit_counts(bits[c * step:min(n, (c + 1) * step)], sign_off, top_shift, prefix, shift,
                      digit_mask, counts[c])


_PATTERNS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def kth_largest_magnitude(t: torch.Tensor, k: int) -> float:
    """The k-th largest |t| (1 <= k <= numel), exactly, for float32 / float64 tensors."""
    if t.dtype not in (torch.float32, torch.float64):
        got = str(t.dtype).removeprefix("torch.")
        raise TypeError(f"kth_largest_magnitude: float32 or float64 expected, got {got}")
    x = t.detach().reshape(-1).numpy()
    if not 1 <= k <= x.size:
        raise ValueError(f"kth_largest_magnitude: k={k} outside 1..{x.size}")
    utype = _PATTERNS[x.dtype]
    bits = x.view(utype)
    nbits = 8 * x.dtype.itemsize - 1  # the sign bit is cleared
    chunks = _threads()
    value, need = 0, k  # the bits found so far; how many entries at or above the k-th remain to pass
    for top in range(nbits, 0, -16):
        width = min(16, top)
        counts = np.zeros((chunks, 1 << width), np.int64)
        _digit_counts_parallel(bits, utype((1 << nbits) - 1), utype(top),
                               utype(value >> top), utype(top - width), utype((1 << width) - 1), counts)
        from_top = np.cumsum(counts.sum(axis=0)[::-1])
        digit_rank = int(np.searchsorted(from_top, need))  # first digit (from the top) reaching `need`
        need -= int(from_top[digit_rank - 1]) if digit_rank else 0
        value |= ((1 << width) - 1 - digit_rank) << (top - width)
    return float(np.array([value], dtype=utype).view(x.dtype)[0])


# ---- TIES: trim, weigh, elect signs, disjoint mean ----------------------------------------

@njit(**_JIT)
def _trim_weigh(x, cut, weight):
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        x[i] = v * (weight if abs(v) >= cut else zero)  # v·0 (not a select) keeps v·w's rounding and sign rules


@njit(**_JIT)
def _sign_of_sum(first, second, out):
    for i in range(out.size):
        out[i] = first[i] + second[i]


@njit(**_JIT)
def _add(out, x):
    for i in range(out.size):
        out[i] += x[i]


@njit(**_JIT)
def _agree(x, sign, acc, count, first):
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.size):
        s = sign[i]
        elected = (one if s > zero else zero) - (one if s < zero else zero)
        a = one if x[i] * elected > zero else zero  # t·±1 is exact
        acc[i] = x[i] * a if first else acc[i] + x[i] * a
        count[i] = a if first else count[i] + a


@njit(**_JIT)
def _mean(acc, count, out):
    one = out.dtype.type(1)
    for i in range(out.size):
        c = count[i]
        out[i] = acc[i] / (c if c > one else one)


@njit(parallel=True, **_JIT)
def _trim_elect_mean(xs, cuts, weights, block, chunks):
    n, k = xs[0].size, len(xs)
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        total = np.empty(block, xs[0].dtype)
        acc = np.empty(block, xs[0].dtype)
        count = np.empty(block, xs[0].dtype)
        for lo in range(c * step, min(n, (c + 1) * step), block):
            hi = min(n, lo + block, (c + 1) * step)
            m = hi - lo
            for j in range(k):
                _trim_weigh(xs[j][lo:hi], cuts[j], weights[j])
            if k == 1:
                total[:m] = xs[0][lo:hi]
            else:
                _sign_of_sum(xs[0][lo:hi], xs[1][lo:hi], total[:m])
                for j in range(2, k):
                    _add(total[:m], xs[j][lo:hi])
            for j in range(k):
                _agree(xs[j][lo:hi], total[:m], acc[:m], count[:m], j == 0)
            _mean(acc[:m], count[:m], xs[0][lo:hi])


def trim_elect_mean_(deltas: list[torch.Tensor], cuts: list[float], weights: list[float]) -> torch.Tensor:
    """TIES's merge of same-shaped contiguous float32/float64 deltas, into deltas[0] (all are
    overwritten): each delta keeps the entries with |τ| >= its cut, times its weight; per entry the
    sign of the sum is elected and the result is the mean over the inputs whose entry is non-zero
    with that sign (0 where none). A cut of 0 keeps every entry. With one input it is the weighted
    trim. Same arithmetic, in the same order, as the op-by-op definition (tests/test_merge_dense.py)."""
    dtype = deltas[0].dtype
    if dtype not in (torch.float32, torch.float64) or any(d.dtype != dtype or d.shape != deltas[0].shape
                                                          or not d.is_contiguous() for d in deltas):
        raise TypeError("trim_elect_mean_: contiguous float32/float64 deltas of one shape and dtype expected, got "
                        + ", ".join(f"{d.dtype} {tuple(d.shape)}" for d in deltas))
    np_type = np.float32 if dtype == torch.float32 else np.float64
    _trim_elect_mean(tuple(d.view(-1).numpy() for d in deltas), np.asarray(cuts, np_type),
                     np.asarray(weights, np_type), BLOCK, _threads())
    return deltas[0]


# ---- ||M||² ----------------------------------------------------------------------------------

@njit(fastmath={"reassoc"}, **_JIT)  # reassociation lets the float64 sum use vector lanes
def _sum_sq(x):
    s = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        s += v * v
    return s


@njit(parallel=True, **_JIT)
def _sum_sq_parallel(x, chunks):
    n = x.size
    step = (n + chunks - 1) // chunks
    parts = np.zeros(chunks)
    for c in prange(chunks):
        parts[c] = _sum_sq(x[c * step:min(n, (c + 1) * step)])
    return parts.sum()


def sum_of_squares(t: torch.Tensor) -> float:
    """||t||²_F accumulated in float64 (t contiguous float32/float64)."""
    return float(_sum_sq_parallel(t.detach().reshape(-1).numpy(), _threads()))
