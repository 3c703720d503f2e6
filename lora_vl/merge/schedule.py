"""Per-layer and per-module coefficients: λ for input i at module m.

λ(m) = weight · ramp(layer(m)) · Π_{pattern matches m} module_weights[pattern],
and 0 outside `layers` when a layer selection is given. Modules with no layer index
(e.g. lm_head) are outside any layer selection's reach and keep `weight` (ramp does not apply).
"""
from __future__ import annotations

import re

_LAYER = re.compile(r"\.layers\.(\d+)\.")


def layer_index(module: str) -> int | None:
    m = _LAYER.search(module)
    return int(m.group(1)) if m else None


def parse_layers(spec: str, where: str) -> list[int]:
    """'8-16' or '0-3,20,30-31' -> sorted layer indices (ranges inclusive)."""
    out: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ValueError(f"{where}: bad layer range {part!r}; expected e.g. '8-16' or '0-3,20'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"{where}: layer range {part!r} runs backwards")
        out.update(range(lo, hi + 1))
    return sorted(out)


def ramp_factor(layer: int, ramp: list[float], first: int, last: int) -> float:
    """Linear interpolation from ramp[0] at layer `first` to ramp[1] at layer `last`."""
    if last == first:
        return ramp[0]
    t = (layer - first) / (last - first)
    return ramp[0] + t * (ramp[1] - ramp[0])


def coefficient(module: str, weight: float, layers: list[int] | None = None,
                ramp: list[float] | None = None, module_weights: dict[str, float] | None = None,
                num_layers: int | None = None) -> float:
    """The coefficient of one input at `module` (see the module docstring)."""
    lam = weight
    for pattern, factor in (module_weights or {}).items():
        if re.search(pattern, module):
            lam *= factor
    layer = layer_index(module)
    if layer is None:
        return lam
    if layers is not None and layer not in layers:
        return 0.0
    if ramp is not None:
        first, last = (layers[0], layers[-1]) if layers else (0, max((num_layers or 1) - 1, 0))
        lam *= ramp_factor(layer, ramp, first, last)
    return lam
