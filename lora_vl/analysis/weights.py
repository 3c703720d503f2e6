"""Per-layer ‖ΔW‖_F of a LoRA adapter from its factors, never forming a dense d_out x d_in matrix.

ΔW = s·B A (B: out x r, A: r x in, s = alpha/r or alpha/sqrt(r) with rsLoRA, per module as PEFT
resolves rank_pattern / alpha_pattern), so ‖ΔW‖_F² = s² tr(AᵀBᵀBA) = s² tr((BᵀB)(AAᵀ)): two r x r
Gram matrices. Factors are read one module at a time through the merge stage's AdapterFile.
"""
from __future__ import annotations

import math
from pathlib import Path

from lora_vl.merge.io import AdapterFile, LoraFactors
from lora_vl.merge.schedule import layer_index


def frobenius_norm(f: LoraFactors) -> float:
    """‖s·B A‖_F via the r x r Grams (float64)."""
    A, B = f.A.double(), f.B.double()
    sq = float(((B.T @ B) * (A @ A.T)).sum())  # tr(XY) = Σ X∘Yᵀ, and A Aᵀ is symmetric
    return abs(f.scale) * math.sqrt(max(sq, 0.0))


def module_kind(module: str) -> str:
    """'...layers.3.self_attn.q_proj' -> 'q_proj'."""
    return module.rsplit(".", 1)[-1]


def adapter_norms(path: str | Path) -> dict:
    """{'modules': {module: norm}, 'layers': [{'layer', 'norm', 'by_kind'}], 'other': {module: norm},
    'total': norm} — layer norms are the Frobenius norm over all of that layer's modules."""
    adapter = AdapterFile(path)
    modules = {m: frobenius_norm(adapter.factors(m)) for m in adapter.modules}
    per_layer: dict[int, dict[str, float]] = {}
    other = {}
    for m, v in modules.items():
        i = layer_index(m)
        if i is None:
            other[m] = v
            continue
        kinds = per_layer.setdefault(i, {})
        kinds[module_kind(m)] = math.sqrt(kinds.get(module_kind(m), 0.0) ** 2 + v * v)
    layers = [{"layer": i, "norm": math.sqrt(sum(v * v for v in kinds.values())),
               "by_kind": dict(sorted(kinds.items()))}
              for i, kinds in sorted(per_layer.items())]
    return {"path": str(path), "modules": modules, "layers": layers, "other": other,
            "total": math.sqrt(sum(v * v for v in modules.values())),
            "saved_modules": sorted(adapter.extra_keys)}

