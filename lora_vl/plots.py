"""PNG figures for reports. A matplotlib `Figure` made directly (not through pyplot) draws on its
own Agg canvas: no display, no global backend switch, nothing to close. Written atomically."""
from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from lora_vl.artifacts import atomic_write_bytes

__all__ = ["Figure", "save_png"]


def save_png(fig: Figure, path: Path, dpi: int = 110) -> Path:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
