"""Exact algebra on LoRA factors: weighted sums by concatenation, SVD compression from factors.

PEFT's `add_weighted_adapter(combination_type="linear")` mixes A's and B's separately, which adds
cross terms; concatenation keeps Σ λ_i s_i B_i A_i exact. PEFT's svd variants form the dense
d_out x d_in delta; here the SVD comes from QR of the stacked factors and an SVD of the r x r core.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lora_vl.merge.io import LoraFactors
from lora_vl.merge.methods import merge_method
from lora_vl.threads import one_thread  # small eigh/SVD: see lora_vl/threads.py


@dataclass
class CompressionStats:
    rank_in: int
    rank_out: int
    rel_error: float  # ||ΔW - ΔW_r||_F / ||ΔW||_F
    kept_energy: float  # Σ kept σ² / Σ σ²


@merge_method("sum", dense=False, help="exact Σ λ_i ΔW_i by concatenating factors (rank Σ r_i unless `rank`)")
def weighted_sum(terms: list[tuple[float, LoraFactors]]) -> LoraFactors | None:
    """Σ λ_i ΔW_i exactly, as one LoRA of rank Σ r_i with the scales folded into B (scale 1).

    Terms with λ = 0 are left out so they add no rank; None when nothing is left.
    """
    kept = [(lam, f) for lam, f in terms if lam != 0.0]
    if not kept:
        return None
    dtype = torch.promote_types(kept[0][1].A.dtype, torch.float32)
    A = torch.cat([f.A.to(dtype) for _, f in kept], dim=0)
    B = torch.cat([(f.B.double() * (lam * f.scale)).to(dtype) for lam, f in kept], dim=1)
    return LoraFactors(A, B, 1.0)


def energy_stats(S: torch.Tensor, rank: int, total_sq: float) -> CompressionStats:
    kept_sq = float((S[:rank].double() ** 2).sum())
    total_sq = max(total_sq, kept_sq)
    if total_sq == 0.0:
        return CompressionStats(len(S), rank, 0.0, 1.0)
    return CompressionStats(len(S), rank, ((total_sq - kept_sq) / total_sq) ** 0.5, kept_sq / total_sq)


def split_svd(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int, dtype) -> LoraFactors:
    """U S Vh truncated to `rank` as LoRA factors, √σ on each side (balanced for further training)."""
    root = S[:rank].sqrt()
    return LoraFactors((root[:, None] * Vh[:rank]).to(dtype).contiguous(),
                       (U[:, :rank] * root[None, :]).to(dtype).contiguous(), 1.0)


def gram_basis(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n x k) = Q R with orthonormal Q = X·W, returned as (W, R), both small (k x k').

    From the float64 Gram matrix XᵀX = V Λ Vᵀ: W = V Λ^-1/2, R = Λ^1/2 Vᵀ (zero directions
    dropped). Used instead of a thin QR because LAPACK's tall QR is ~3x slower on CPU here,
    and float64 keeps singular values down to ~1e-8 of the largest.
    """
    X64 = X.double()
    G = X64.T @ X64
    with one_thread():
        lam, V = torch.linalg.eigh(G)
    keep = lam > lam.max().clamp(min=0) * 1e-12 if lam.numel() else lam > 0
    lam, V = lam[keep], V[:, keep]
    return V / lam.sqrt(), lam.sqrt()[:, None] * V.T


def compress(f: LoraFactors, rank: int) -> tuple[LoraFactors, CompressionStats]:
    """Best rank-`rank` approximation of s·B@A (Eckart–Young), never forming the dense matrix.

    B = Qb Rb and Aᵀ = Qa Ra with orthonormal Qb, Qa, so s·B A = Qb (s Rb Raᵀ) Qaᵀ; the SVD of
    the small core gives the singular values of ΔW exactly and the truncation error for free.
    """
    dtype = torch.promote_types(f.A.dtype, torch.float32)
    Wb, Rb = gram_basis(f.B)
    Wa, Ra = gram_basis(f.A.T)
    core = f.scale * (Rb @ Ra.T)
    with one_thread():
        Uc, S, Vhc = torch.linalg.svd(core)
    keep = max(1, min(rank, int((S > 0).sum())))
    stats = energy_stats(S, keep, float((S ** 2).sum()))
    # U = Qb Uc = B (Wb Uc) and Vh = Vhc Qaᵀ = (Vhc Waᵀ) A: small products first, one tall matmul each.
    U = f.B.to(dtype) @ (Wb @ Uc[:, :keep]).to(dtype)
    Vh = (Vhc[:keep] @ Wa.T).to(dtype) @ f.A.to(dtype)
    return split_svd(U, S.to(dtype), Vh, keep, dtype), stats
