"""Merges that need the dense delta of each module: TIES, DARE, DARE-TIES, magnitude pruning, DELLA.

Each works on one module at a time (so a 7B merge holds one d_out x d_in block per input) and
the result is factored back to a target rank by `factor_dense`. PEFT implements these only for
adapters of equal rank and only on a loaded model, so the definitions are written here:

  trim (magnitude): keep the `density` fraction of entries of largest |τ_i|, zero the rest
  DARE:             keep each entry with probability `density` (seeded), rescale kept by 1/density
  TIES:             trim, weight (λ_i τ_i), elect sign γ = sign Σ_i λ_i τ_i, then the disjoint mean
                    Σ_{i: sign agrees, ≠0} λ_i τ_i / #{i: sign agrees, ≠0}
  DARE-TIES:        DARE drop/rescale in place of the trim, then TIES sign election + disjoint mean
  magnitude:        trim, then Σ λ_i τ_i
  DELLA:            MAGPRUNE (per row, keep probability linear in magnitude rank, density ± ε/2;
                    kept entries divided by their keep probability), then TIES sign election +
                    disjoint mean of the λ-weighted deltas (Deep et al. 2024)
"""
from __future__ import annotations

import zlib

import torch

from lora_vl.merge.algebra import CompressionStats, energy_stats, gram_basis, split_svd
from lora_vl.merge.io import LoraFactors
from lora_vl.merge.methods import Setting, merge_method
from lora_vl.threads import one_thread


def trim_magnitude(t: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the ⌈density·n⌉ entries of largest magnitude (ties at the threshold kept)."""
    return t if density >= 1.0 else trim_(t.clone(), density)


def trim_(t: torch.Tensor, density: float) -> torch.Tensor:
    """`trim_magnitude` in place. In-place ops throughout: on CPU a fresh 45M-entry temporary
    costs more in page faults than the arithmetic (a 7B MLP delta: `d * 1.5` 229 ms, the same
    product into an existing buffer 86 ms)."""
    if density >= 1.0:
        return t
    k = max(1, int(round(density * t.numel())))
    mag = t.abs() if t.dtype != torch.bfloat16 else t.float().abs()
    # The k-th largest |t| exactly, by introselect in place on our own copy: numpy.partition takes
    # 0.17 s on 45M float32 entries (2 cores), torch's kthvalue 1.2 s, topk 5 s, a full sort 7.8 s
    # (docs/bench_merge.md).
    flat = mag.reshape(-1).numpy().copy()
    flat.partition(flat.size - k)
    threshold = float(flat[flat.size - k])
    del flat
    return t.mul_(mag.ge_(threshold).to(t.dtype))  # × 1.0 keeps an entry exactly, × 0.0 zeroes it


def module_generator(seed: int, module: str, index: int) -> torch.Generator:
    """A generator seeded by (seed, module, input index): reproducible in any module order."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{module}:{index}".encode()))


def dare_drop_(t: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Random drop with rescale, in place: E[dare_drop_(t)] = t."""
    if density >= 1.0:
        return t
    keep = torch.rand(t.shape, generator=generator).lt_(density).to(t.dtype)
    return t.div_(density).mul_(keep)


def disjoint_mean(weighted: list[torch.Tensor]) -> torch.Tensor:
    """TIES sign election and disjoint mean over already weighted task deltas: per entry, the mean
    over the inputs whose entry is non-zero and has the sign of the sum. The inputs are read only."""
    sign = weighted[0].clone()
    for t in weighted[1:]:
        sign.add_(t)
    sign.sign_()
    acc, count, agree = torch.zeros_like(sign), torch.zeros_like(sign), torch.empty_like(sign)
    for t in weighted:
        # sign(t)·sign(sum) is 1 exactly where t ≠ 0 agrees with the elected sign (0 or -1 elsewhere)
        torch.sign(t, out=agree).mul_(sign).gt_(0)
        count.add_(agree)
        acc.addcmul_(t, agree)
    return acc.div_(count.clamp_(min=1))


# Dense methods take the dense deltas as their own: they are trimmed / dropped in place.
DENSITY = Setting(0.5, "fraction of entries kept (0 < density <= 1)",
                  low=0.0, high=1.0, low_open=True)


@merge_method("ties", dense=True, settings={"density": DENSITY},
              help="trim each delta to `density`, elect signs, disjoint mean (Yadav et al. 2023)")
def ties(deltas: list[torch.Tensor], weights: list[float], gens=None, *, density: float) -> torch.Tensor:
    return disjoint_mean([trim_(d, density).mul_(w) for d, w in zip(deltas, weights)])


@merge_method("dare", dense=True, settings={"density": DENSITY},
              help="drop entries at random (keep `density`), rescale, sum (Yu et al. 2024)")
def dare(deltas, weights, gens: list[torch.Generator], *, density: float) -> torch.Tensor:
    return weighted_total([dare_drop_(d, density, g) for d, g in zip(deltas, gens)], weights)


@merge_method("dare_ties", dense=True, settings={"density": DENSITY},
              help="DARE drop/rescale, then TIES sign election + disjoint mean")
def dare_ties(deltas, weights, gens: list[torch.Generator], *, density: float) -> torch.Tensor:
    return disjoint_mean([dare_drop_(d, density, g).mul_(w) for d, w, g in zip(deltas, weights, gens)])


@merge_method("magnitude", dense=True, settings={"density": DENSITY},
              help="trim each delta to `density` by magnitude, then sum")
def magnitude(deltas: list[torch.Tensor], weights: list[float], gens=None, *, density: float) -> torch.Tensor:
    return weighted_total([trim_(d, density) for d in deltas], weights)


def weighted_total(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Σ w_i d_i, accumulated into the first delta's memory."""
    total = deltas[0].mul_(weights[0])
    for d, w in zip(deltas[1:], weights[1:]):
        total.add_(d.mul_(w))  # not add_(alpha=w): that may fuse into one rounding, unlike w·d + total
    return total


def magprune(t: torch.Tensor, density: float, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """DELLA's MAGPRUNE: within each row, keep probabilities rise linearly with magnitude rank,
    from density - ε/2 (smallest) to density + ε/2 (largest), mean `density`; a kept entry is
    divided by its keep probability, so the expectation is `t`."""
    n = t.shape[-1]
    ranks = t.abs().argsort(dim=-1).argsort(dim=-1).to(torch.float64)  # 0 = smallest in its row
    keep_p = density - epsilon / 2 + epsilon * ranks / max(n - 1, 1)
    keep = torch.rand(t.shape, generator=generator, dtype=torch.float64) < keep_p
    return torch.where(keep, t.double() / keep_p, 0.0).to(t.dtype)


def della_range(values: dict) -> str | None:
    d, e = values["density"], values["epsilon"]
    if d - e / 2 <= 0 or d + e / 2 > 1:
        return f"della: keep probabilities density ± epsilon/2 must lie in (0, 1]; got {d} ± {e / 2}"
    return None


@merge_method("della", dense=True, check=della_range,
              settings={"density": DENSITY,
                        "epsilon": Setting(0.1, "spread of the keep probabilities over magnitude ranks: "
                                                "density ± epsilon/2", low=0.0, high=1.0)},
              help="magnitude-ranked random drop with rescale (MAGPRUNE), then TIES sign election + "
                   "disjoint mean (Deep et al. 2024, DELLA-Merging)")
def della(deltas, weights, gens: list[torch.Generator], *, density: float, epsilon: float) -> torch.Tensor:
    return disjoint_mean([w * magprune(d, density, epsilon, g) for d, w, g in zip(deltas, weights, gens)])


def factor_dense(M: torch.Tensor, rank: int, svd: str = "auto", niter: int = 1, oversample: int = 64,
                 seed: int = 0, start: torch.Tensor | None = None) -> tuple[LoraFactors, CompressionStats]:
    """Rank-`rank` LoRA factors of a dense delta, with the exact relative error of the result.

    svd="exact": full SVD (LAPACK). "randomized": a randomized range finder (Halko et al. 2011)
    with `niter` power iterations, started from `start` when given (a d_in x k matrix whose columns
    span a guess of M's row space) and from seeded Gaussian columns otherwise, filled up to
    rank + `oversample` columns. A merge of LoRA deltas lies mostly in the span of its inputs' A
    rows, so from that start one power iteration reaches the error that four reach from a random
    start (equal to 1e-4 relative on 7B-shaped TIES merges) at 4 instead of 10 passes over M
    (docs/bench_merge.md); from a random start, 64 extra columns were needed on the flat spectra
    of random adapters (16 left the error 0.5% above the optimum). "auto" picks randomized when
    rank is well below the dimensions. With an orthonormal range basis Q, U S Vᵀ = Q Qᵀ M, so
    ||M - ΔW_r||² = ||M||² − Σ kept σ² holds for both and the reported error is the true one.
    """
    dtype = M.dtype
    small = min(M.shape)
    rank = min(rank, small)
    if svd == "randomized" or (svd == "auto" and rank + oversample < small // 2):
        Q = range_basis(M, sketch_matrix(M, rank + oversample, start, seed), niter)
        U, S, Vh = small_svd(Q, Q.T @ M)
    else:
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    rank = min(rank, len(S))
    stats = energy_stats(S, rank, float(torch.linalg.vector_norm(M, dtype=torch.float64) ** 2))
    return split_svd(U, S, Vh, rank, dtype), stats


def sketch_matrix(M: torch.Tensor, columns: int, start: torch.Tensor | None, seed: int) -> torch.Tensor:
    """`start`'s columns, then seeded Gaussian ones up to `columns` (at most min(M.shape))."""
    columns = min(columns, min(M.shape))
    have = [] if start is None else [start[:, :columns].to(M.dtype)]
    missing = columns - (have[0].shape[1] if have else 0)
    if missing > 0:
        g = torch.Generator().manual_seed(seed)
        have.append(torch.randn(M.shape[1], missing, generator=g, dtype=M.dtype))
    return torch.cat(have, dim=1)


def orthonormal(X: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of X's columns, by the float64 Gram matrix twice (CholeskyQR2-style:
    the second pass restores the orthogonality the first loses in X's dtype). LAPACK's QR of a
    tall 11008 x 192 block was ~3x slower here, and this runs 3 times per module. Directions of X
    below 1e-6 of its largest singular value are dropped (`gram_basis`), so Q may be narrower."""
    for _ in range(2):
        X = X @ gram_basis(X)[0].to(X.dtype)
    return X


def range_basis(M: torch.Tensor, omega: torch.Tensor, niter: int) -> torch.Tensor:
    """Orthonormal Q with range(Q) ≈ the top of range(M): M Ω, then `niter` power iterations
    (each re-orthonormalised, which keeps small singular directions from being lost)."""
    Q = orthonormal(M @ omega)
    for _ in range(niter):
        Q = orthonormal(M @ orthonormal(M.T @ Q))
    return Q


def small_svd(Q: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of Q·C (Q orthonormal, C = QᵀM short and wide) from the float64 eigenvalues of C Cᵀ:
    U = Q·Uc, Vh = Ucᵀ C / σ. Vh rows of tiny σ are imprecise but σ·Vh = Ucᵀ C is exact, so the
    factors' product is right."""
    C64 = C.double()
    G = C64 @ C64.T
    with one_thread():
        lam, Uc = torch.linalg.eigh(G)
    S, Uc = lam.flip(0).sqrt(), Uc.flip(1)  # λ > 0: Q's columns all lie in M's range (see orthonormal)
    return Q @ Uc.to(Q.dtype), S.to(Q.dtype), ((Uc.T @ C64) / S[:, None]).to(Q.dtype)
