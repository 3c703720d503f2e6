"""Merges that need the dense delta of each module: TIES, DARE, DARE-TIES, magnitude pruning, DELLA.

Each works on one module at a time (so a 7B merge holds one d_out x d_in block per input) and
the result is factored back to a target rank by `factor_dense`. PEFT implements these only for
adapters of equal rank and only on a loaded model, so the definitions are written here (their
elementwise work in compiled loops, lora_vl/merge/kernels.py):

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


def _compiled():
    """The compiled loops (lora_vl/merge/kernels.py), imported when a dense method first runs:
    numba costs ~0.3 s and ~100 MB of RSS at import, which a sum, a study's training stages or
    `--help` do not need."""
    from lora_vl.merge import kernels
    return kernels


def sum_of_squares(M: torch.Tensor) -> float:
    """||M||²_F accumulated in float64."""
    return _compiled().sum_of_squares(M)


def trim_magnitude(t: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the ⌈density·n⌉ entries of largest magnitude (ties at the threshold kept)."""
    if density >= 1.0:
        return t
    work = t.to(torch.float64 if t.dtype == torch.float64 else torch.float32, copy=True).contiguous()
    return trim_(work, density).to(t.dtype)


def trim_(t: torch.Tensor, density: float) -> torch.Tensor:
    """`trim_magnitude` in place (t contiguous float32/float64)."""
    if density < 1.0:
        _compiled().trim_elect_mean_([t], magnitude_thresholds([t], density), [1.0])  # one input: the trim
    return t


def magnitude_thresholds(ts: list[torch.Tensor], density: float) -> list[float]:
    """Each t's k-th largest |t| (k = round(density·n), at least 1), exactly (a radix select,
    `kernels.kth_largest_magnitude`: 0.05 s for a pair of 11008 x 4096 float32 deltas, numpy's
    introselect 0.20 s, torch's kthvalue ~2.3 s; docs/bench_merge.md)."""
    return [_compiled().kth_largest_magnitude(t, max(1, int(round(density * t.numel())))) for t in ts]


def module_generator(seed: int, module: str, index: int) -> torch.Generator:
    """A generator seeded by (seed, module, input index): reproducible in any module order."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{module}:{index}".encode()))


def dare_drop_(t: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Random drop with rescale, in place: E[dare_drop_(t)] = t."""
    if density >= 1.0:
        return t
    keep = torch.rand(t.shape, generator=generator).lt_(density).to(t.dtype)
    return t.div_(density).mul_(keep)


# Dense methods take the dense deltas as their own: they are trimmed / dropped in place.
DENSITY = Setting(0.5, "fraction of entries kept (0 < density <= 1)",
                  low=0.0, high=1.0, low_open=True)


@merge_method("ties", dense=True, settings={"density": DENSITY},
              help="trim each delta to `density`, elect signs, disjoint mean (Yadav et al. 2023)")
def ties(deltas: list[torch.Tensor], weights: list[float], gens=None, *, density: float) -> torch.Tensor:
    cuts = magnitude_thresholds(deltas, density) if density < 1.0 else [0.0] * len(deltas)
    return _compiled().trim_elect_mean_(deltas, cuts, weights)


@merge_method("dare", dense=True, settings={"density": DENSITY},
              help="drop entries at random (keep `density`), rescale, sum (Yu et al. 2024)")
def dare(deltas, weights, gens: list[torch.Generator], *, density: float) -> torch.Tensor:
    return weighted_total([dare_drop_(d, density, g) for d, g in zip(deltas, gens)], weights)


@merge_method("dare_ties", dense=True, settings={"density": DENSITY},
              help="DARE drop/rescale, then TIES sign election + disjoint mean")
def dare_ties(deltas, weights, gens: list[torch.Generator], *, density: float) -> torch.Tensor:
    dropped = [dare_drop_(d, density, g) for d, g in zip(deltas, gens)]
    return _compiled().trim_elect_mean_(dropped, [0.0] * len(deltas), weights)  # cut 0: keep every entry


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
    pruned = [magprune(d, density, epsilon, g) for d, g in zip(deltas, gens)]
    return _compiled().trim_elect_mean_(pruned, [0.0] * len(deltas), weights)


def factor_dense(M: torch.Tensor, rank: int, svd: str = "auto", niter: int = 1, oversample: int = 64,
                 seed: int = 0, start: torch.Tensor | None = None,
                 total_sq: float | None = None) -> tuple[LoraFactors, CompressionStats]:
    """Rank-`rank` LoRA factors of a dense delta, with the exact relative error of the result.

    svd="exact": full SVD (LAPACK). "randomized": `randomized_svd` with `niter` power iterations,
    started from `start` when given (a d_in x k matrix whose columns span a guess of M's row space)
    and from seeded Gaussian columns otherwise, filled up to rank + `oversample` columns. A merge of
    LoRA deltas lies mostly in the span of its inputs' A rows, so from that start one power
    iteration reaches the error that four reach from a random start, at 3 instead of 10 passes
    over M (docs/bench_merge.md); from a random start, 64 extra columns were needed on the flat
    spectra of random adapters (16 left the error 0.5% above the optimum). "auto" picks randomized
    when rank is well below the dimensions. Both are SVDs of an orthogonal projection of M (exact:
    M itself), so the reported error ||M - ΔW_r|| / ||M|| is the true one. `total_sq`: ||M||²
    if the caller has it already.
    """
    dtype = M.dtype
    small = min(M.shape)
    rank = min(rank, small)
    if svd == "randomized" or (svd == "auto" and rank + oversample < small // 2):
        U, S, Vh = randomized_svd(M, sketch_matrix(M, rank + oversample, start, seed), niter)
    else:
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    rank = min(rank, len(S))
    total_sq = sum_of_squares(M) if total_sq is None else total_sq
    return split_svd(U, S, Vh, rank, dtype), energy_stats(S, rank, total_sq)


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
    below 1e-6 of its largest singular value are dropped (`gram_basis`), so Q may be narrower.
    (One pass for the power iteration's Q, which only carries a span, saved ~4 s on the 7B but
    left a rank-3 delta's error at 1.2e-4 instead of < 1e-5: tests/test_merge_dense.py.)"""
    for _ in range(2):
        X = X @ gram_basis(X)[0].to(X.dtype)
    return X


def randomized_svd(M: torch.Tensor, omega: torch.Tensor, niter: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U S Vh of M's projection onto a sketched subspace (Halko et al. 2011), from M Ω and `niter`
    power iterations, each re-orthonormalised (which keeps small singular directions from being
    lost). niter = 0: Q = orth(M Ω), M ≈ Q Qᵀ M (2 passes over M). niter ≥ 1 ends in the row
    space instead: P = orth(Mᵀ Q), M ≈ (M P) Pᵀ, 2·niter + 1 passes where the column-space finish
    takes 2·niter + 2. On 7B-shaped TIES merges niter = 1 this way lands within 6e-7 of the exact
    SVD's error (0.6092886 vs 0.6092880; the 4-pass finish 0.6092882, niter 0 0.6093171) in 0.27 s
    less per 11008 x 4096 module (docs/bench_merge.md). Either way the result is an orthogonal
    projection of M, so ||M - ΔW_r||² = ||M||² − Σ kept σ² and the reported error is the true one."""
    Q = orthonormal(M @ omega)
    if niter == 0:
        return small_svd(Q, Q.T @ M)
    for _ in range(niter - 1):
        Q = orthonormal(M @ orthonormal(M.T @ Q))
    P = orthonormal(M.T @ Q)
    V, S, Uh = small_svd(P, (M @ P).T)  # Mᵀ ≈ P (M P)ᵀ = V S Uh, so M ≈ Uhᵀ S Vᵀ
    return Uh.T, S, V.T


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
