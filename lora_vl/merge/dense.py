"""Merges that need the dense delta of each module: TIES, DARE, DARE-TIES, magnitude pruning.

Each works on one module at a time (so a 7B merge holds one d_out x d_in block per input) and
the result is factored back to a target rank by `factor_dense`. PEFT implements these only for
adapters of equal rank and only on a loaded model, so the definitions are written here:

  trim (magnitude): keep the `density` fraction of entries of largest |τ_i|, zero the rest
  DARE:             keep each entry with probability `density` (seeded), rescale kept by 1/density
  TIES:             trim, weight (λ_i τ_i), elect sign γ = sign Σ_i λ_i τ_i, then the disjoint mean
                    Σ_{i: sign agrees, ≠0} λ_i τ_i / #{i: sign agrees, ≠0}
  DARE-TIES:        DARE drop/rescale in place of the trim, then TIES sign election + disjoint mean
  magnitude:        trim, then Σ λ_i τ_i
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from lora_vl.merge.algebra import CompressionStats, energy_stats, split_svd
from lora_vl.merge.io import LoraFactors
from lora_vl.merge.methods import merge_method


def trim_magnitude(t: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the ⌈density·n⌉ entries of largest magnitude (ties at the threshold kept)."""
    if density >= 1.0:
        return t
    k = max(1, int(round(density * t.numel())))
    mag = t.abs()
    # The k-th largest |t| exactly, by introselect: numpy.partition takes 0.17 s on 45M float32
    # entries (2 cores), torch's kthvalue 1.2 s, topk 5 s, a full sort 7.8 s (docs/bench_merge.md).
    flat = mag.reshape(-1).numpy() if mag.dtype != torch.bfloat16 else mag.float().reshape(-1).numpy()
    threshold = float(np.partition(flat, flat.size - k)[flat.size - k])
    return torch.where(mag >= threshold, t, torch.zeros((), dtype=t.dtype))


def module_generator(seed: int, module: str, index: int) -> torch.Generator:
    """A generator seeded by (seed, module, input index): reproducible in any module order."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{module}:{index}".encode()))


def dare_drop(t: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Random drop with rescale: E[dare_drop(t)] = t."""
    if density >= 1.0:
        return t
    keep = torch.rand(t.shape, generator=generator) < density
    return torch.where(keep, t / density, torch.zeros((), dtype=t.dtype))


def disjoint_mean(weighted: list[torch.Tensor]) -> torch.Tensor:
    """TIES sign election and disjoint mean over already weighted task deltas."""
    total = torch.zeros_like(weighted[0])
    for t in weighted:
        total += t
    sign = torch.sign(total)
    acc = torch.zeros_like(total)
    count = torch.zeros_like(total)
    for t in weighted:
        agree = (torch.sign(t) == sign) & (t != 0)
        acc += torch.where(agree, t, 0.0)
        count += agree
    return acc / count.clamp(min=1)


@merge_method("ties", dense=True, help="trim each delta to `density`, elect signs, disjoint mean (Yadav et al. 2023)")
def ties(deltas: list[torch.Tensor], weights: list[float], density: float, gens=None) -> torch.Tensor:
    return disjoint_mean([w * trim_magnitude(d, density) for d, w in zip(deltas, weights)])


@merge_method("dare", dense=True, help="drop entries at random (keep `density`), rescale, sum (Yu et al. 2024)")
def dare(deltas, weights, density, gens: list[torch.Generator]) -> torch.Tensor:
    return sum(w * dare_drop(d, density, g) for d, w, g in zip(deltas, weights, gens))


@merge_method("dare_ties", dense=True, help="DARE drop/rescale, then TIES sign election + disjoint mean")
def dare_ties(deltas, weights, density, gens: list[torch.Generator]) -> torch.Tensor:
    return disjoint_mean([w * dare_drop(d, density, g) for d, w, g in zip(deltas, weights, gens)])


@merge_method("magnitude", dense=True, help="trim each delta to `density` by magnitude, then sum")
def magnitude(deltas: list[torch.Tensor], weights: list[float], density: float, gens=None) -> torch.Tensor:
    return sum(w * trim_magnitude(d, density) for d, w in zip(deltas, weights))


def factor_dense(M: torch.Tensor, rank: int, svd: str = "auto", niter: int = 4,
                 oversample: int = 64, seed: int = 0) -> tuple[LoraFactors, CompressionStats]:
    """Rank-`rank` LoRA factors of a dense delta, with the exact relative error of the result.

    svd="exact": full SVD (LAPACK); "randomized": torch.svd_lowrank with `oversample` extra
    columns and `niter` power iterations (64 extra columns: on the flat spectra of TIES results of
    random 7B-shaped adapters, 16 left the error 0.5% above the optimum, 64 reaches it; see
    docs/bench_merge.md); "auto" picks randomized when rank is well below the
    dimensions. With an orthonormal range basis Q, U S Vᵀ = Q Qᵀ M, so ||M - ΔW_r||² =
    ||M||² − Σ kept σ² holds for both and the reported error is the true one.
    """
    dtype = M.dtype
    small = min(M.shape)
    rank = min(rank, small)
    use_random = svd == "randomized" or (svd == "auto" and rank + oversample < small // 2)
    if use_random:
        # svd_lowrank draws its test matrix from the global generator: seed it, then restore it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            U, S, V = torch.svd_lowrank(M, q=min(rank + oversample, small), niter=niter)
        Vh = V.T
    else:
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    stats = energy_stats(S, rank, float((M.double() ** 2).sum()))
    return split_svd(U, S, Vh, rank, dtype), stats
