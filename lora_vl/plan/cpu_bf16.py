"""bf16 matmuls at fp32 speed, for planning on a CPU that emulates bf16.

The planner runs a GPU step's bf16 autocast on the CPU: it needs the bf16 tensors (their bytes),
not bf16 arithmetic. A CPU without bf16 instructions (AVX2 only) runs torch's bf16 GEMMs in
software: measured here 0.28 GFLOP/s against 154 GFLOP/s in fp32 (2048 × 4096 × 4096), which made
a 7B plan take half a day. `Fp32Compute` runs the heavy operators (matmuls, attention,
convolution) on fp32 copies of their bf16 inputs and hands back results of exactly the dtypes,
shapes and strides the operator returns in bf16 (its meta kernel says which). Placed outside the
planner's tracker, the fp32 copies live inside the operator, out of the tracker's sight, like a
GPU kernel's scratch; the tracker sees the same allocations as without it (tested on a whole
planned step: the same bytes in every phase and category).
"""
from __future__ import annotations

import contextlib
import functools
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

# operators whose arithmetic dominates a training or generation step (what autocast runs in bf16)
HEAVY = frozenset({"gemm_4bit", "mm", "addmm", "bmm", "baddbmm", "addbmm", "_addmm_activation", "convolution",
                   "_scaled_dot_product_flash_attention_for_cpu",
                   "_scaled_dot_product_flash_attention_for_cpu_backward"})
EMULATED = 3.0  # bf16 this many times slower than fp32: emulated (native bf16 runs at or above fp32 speed)


@functools.cache
def matmul_rates(n: int = 512) -> tuple[float, float]:
    """(fp32, bf16) matmul FLOP/s measured here, once per process."""
    def rate(dtype) -> float:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        return 3 * 2 * n ** 3 / (time.perf_counter() - t0)

    return rate(torch.float32), rate(torch.bfloat16)


def bf16_emulated() -> bool:
    fp32, bf16 = matmul_rates()
    return fp32 > EMULATED * bf16


def for_device(device: torch.device):
    """The context a planned step runs in on `device`: `Fp32Compute` on a CPU that emulates bf16."""
    if device.type == "cpu" and bf16_emulated():
        return Fp32Compute()
    return contextlib.nullcontext()


def _is_bf16(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16


def _fp32(x):
    return x.float() if _is_bf16(x) else x


def _meta(x):
    if isinstance(x, torch.Tensor):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
    return x


def _as(meta, value):
    """`value` (computed in fp32) in the dtype, shape and strides `meta` says the operator returns."""
    if not isinstance(meta, torch.Tensor):
        return value
    out = torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype, device=value.device)
    return out.copy_(value)


class Fp32Compute(TorchDispatchMode):
    """Heavy operators with a bf16 input computed in fp32, their results as bf16 would give them.
    Operators that write into an argument (`out=`, in-place) run as they are."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func.__name__.split(".")[0] not in HEAVY or func._schema.is_mutable
                or not any(_is_bf16(x) for x in tree_flatten((args, kwargs))[0])):
            return func(*args, **kwargs)
        meta = func(*tree_map(_meta, args), **tree_map(_meta, kwargs))
        value = func(*tree_map(_fp32, args), **tree_map(_fp32, kwargs))
        metas, spec = tree_flatten(meta)
        return tree_unflatten([_as(m, v) for m, v in zip(metas, tree_flatten(value)[0])], spec)
