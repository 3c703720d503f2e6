"""PNG plots of an analysis.json (matplotlib Agg, written atomically)."""
from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import MaxNLocator

from lora_vl.plots import Figure, save_png


def _layer_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _band(ax, xs, rows, key, ci_key, label):
    ys = [r[key] for r in rows]
    line, = ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", ms=3, label=label)
    cis = [r.get(ci_key) for r in rows]
    if all(c is not None for c in cis):
        ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.15)


def plot_separation(analysis: dict, path: Path) -> Path:
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for name, m in analysis["models"].items():
        xs = [r["layer"] for r in m["layers"]]
        _band(axes[0], xs, m["layers"], "probe_acc", "probe_ci", name)
        _band(axes[1], xs, m["layers"], "diffmean_acc", "diffmean_ci", name)
    for ax, title in zip(axes, ("logistic probe (held-out folds)", "mean-difference direction (held-out folds)")):
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set(title=title, xlabel="decoder layer (output)", ylabel="harmful vs benign accuracy", ylim=(0.4, 1.02))
        ax.grid(alpha=0.3)
        _layer_axis(ax)
    axes[0].legend(fontsize=7)
    return save_png(fig, path)


def plot_reference(analysis: dict, path: Path) -> Path:
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    ref = analysis["reference"]
    for name, m in analysis["models"].items():
        xs = [r["layer"] for r in m["layers"]]
        axes[0].plot(xs, [float("nan") if r["cos_to_reference"] is None else r["cos_to_reference"]
                          for r in m["layers"]], marker="o", ms=3, label=name)
        _band(axes[1], xs, m["layers"], "ref_d", "ref_d_ci", name)
    axes[0].set(title=f"cosine to {ref}'s refusal direction", xlabel="decoder layer (output)",
                ylabel="cosine", ylim=(-1.05, 1.05))
    axes[1].set(title=f"harmful vs benign along {ref}'s direction (held out)",
                xlabel="decoder layer (output)", ylabel="d′ = (mean gap) / pooled sd")
    for ax in axes:
        ax.grid(alpha=0.3)
        _layer_axis(ax)
    axes[0].legend(fontsize=7)
    return save_png(fig, path)


def plot_delta_w(analysis: dict, path: Path) -> Path:
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for name, a in analysis["delta_w"].items():
        ax.plot([r["layer"] for r in a["layers"]], [r["norm"] for r in a["layers"]], marker="o", ms=3, label=name)
    ax.set(title="per-layer ‖ΔW‖_F of each adapter (from LoRA factors)", xlabel="decoder layer",
           ylabel="‖ΔW‖_F over the layer's modules")
    ax.grid(alpha=0.3)
    _layer_axis(ax)
    ax.legend(fontsize=7)
    return save_png(fig, path)
