"""Per-layer separation of harmful vs benign prompts, and a reference refusal direction.

Written by hand (torch only): an L2 logistic probe with stratified held-out folds, the
mean-difference ("diff-in-means") direction with its own held-out classifier, and projections
onto a reference model's direction with bootstrap CIs. Directions are fitted on the fit half of
the prompts and measured on the held-out half, so no number is read off the prompts it was fitted on.
"""
from __future__ import annotations

import math
import random

import torch

from lora_vl.evaluation.metrics import wilson
from lora_vl.threads import one_thread  # many small float64 problems


def stratified_folds(labels: list[int], k: int, seed: int) -> list[int]:
    """A fold index per sample; each class spread evenly over the k folds."""
    rng = random.Random(seed)
    fold = [0] * len(labels)
    for cls in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == cls]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold[i] = j % k
    return fold


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0, unbiased=False)
    std = torch.where(std > 1e-6 * (mean.abs() + 1), std, torch.ones_like(std))  # constant features: leave at 0
    return (train - mean) / std, (test - mean) / std


def fit_logistic(X: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias minimising mean log-loss + l2·‖w‖² (float64, L-BFGS)."""
    X, y = X.double(), y.double()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe_accuracy(X: torch.Tensor, labels: list[int], folds: list[int], l2: float) -> tuple[int, int]:
    """(held-out correct, n) of the logistic probe over all folds."""
    y = torch.tensor(labels)
    f = torch.tensor(folds)
    correct = 0
    for k in sorted(set(folds)):
        tr, te = f != k, f == k
        Xtr, Xte = _standardise(X[tr].double(), X[te].double())
        w, b = fit_logistic(Xtr, y[tr], l2)
        correct += int(((Xte @ w + b > 0).long() == y[te]).sum())
    return correct, len(labels)


def mean_difference(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean(harmful) − mean(benign), float64."""
    X = X.double()
    return X[y == 1].mean(0) - X[y == 0].mean(0)


def diffmean_accuracy(X: torch.Tensor, labels: list[int], folds: list[int]) -> tuple[int, int]:
    """(held-out correct, n) of the classifier 'project on the fold's mean difference, cut at
    the midpoint of the two class means'."""
    y = torch.tensor(labels)
    f = torch.tensor(folds)
    X = X.double()
    correct = 0
    for k in sorted(set(folds)):
        tr, te = f != k, f == k
        d = mean_difference(X[tr], y[tr])
        cut = 0.5 * ((X[tr][y[tr] == 1] @ d).mean() + (X[tr][y[tr] == 0] @ d).mean())
        correct += int(((X[te] @ d > cut).long() == y[te]).sum()) if d.norm() > 0 else int((y[te] == 0).sum())
    return correct, len(labels)


def unit(v: torch.Tensor) -> torch.Tensor | None:
    n = v.norm()
    return v / n if n > 0 and torch.isfinite(n) else None


def cosine(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    return None if a is None or b is None else float(a @ b)


def separation_stats(h: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Along the last dim: mean(h) − mean(b), and that gap over the pooled within-class sd (d′, the
    scale-free separation: residual streams grow with depth and differ between models)."""
    gap = h.mean(-1) - b.mean(-1)
    nh, nb = h.shape[-1], b.shape[-1]
    pooled = ((nh - 1) * h.var(-1) + (nb - 1) * b.var(-1)) / max(nh + nb - 2, 1)
    return gap, gap / pooled.clamp_min(1e-12).sqrt()


def bootstrap_separation(proj: torch.Tensor, y: torch.Tensor, n_boot: int, seed: int) -> tuple[list, list]:
    """Percentile 95% CIs of the gap and of d′, resampling within each class."""
    g = torch.Generator().manual_seed(seed)
    h, b = proj[y == 1], proj[y == 0]
    ih = torch.randint(len(h), (n_boot, len(h)), generator=g)
    ib = torch.randint(len(b), (n_boot, len(b)), generator=g)
    lo, hi = int(0.025 * (n_boot - 1)), int(math.ceil(0.975 * (n_boot - 1)))
    return [[float(v[lo]), float(v[hi])] for v in (torch.sort(x)[0] for x in separation_stats(h[ih], b[ib]))]


def bootstrap_mean(x: torch.Tensor, n_boot: int, seed: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(seed)
    means, _ = torch.sort(x[torch.randint(len(x), (n_boot, len(x)), generator=g)].mean(1))
    return float(means[int(0.025 * (n_boot - 1))]), float(means[int(math.ceil(0.975 * (n_boot - 1)))])


def layer_separation(X: torch.Tensor, labels: list[int], fit: list[bool], folds: list[int], l2: float) -> dict:
    """One layer of one model: probe and diff-in-means accuracy (held out), and its own direction."""
    with one_thread():
        k, n = probe_accuracy(X, labels, folds, l2)
        kd, _ = diffmean_accuracy(X, labels, folds)
    y, fit_mask = torch.tensor(labels), torch.tensor(fit)
    d = mean_difference(X[fit_mask], y[fit_mask])
    return {"probe_acc": k / n, "probe_ci": list(wilson(k, n)), "diffmean_acc": kd / n,
            "diffmean_ci": list(wilson(kd, n)), "mean_diff_norm": float(d.norm()), "direction": unit(d)}


def reference_projection(X: torch.Tensor, labels: list[int], fit: list[bool], ref_dir: torch.Tensor | None,
                         n_boot: int, seed: int) -> dict:
    """How this model's held-out prompts project on the reference model's (unit) direction: the
    mean projection of harmful prompts, the harmful − benign gap, and d′ (gap / pooled sd)."""
    keys = ("ref_proj_harmful", "ref_proj_harmful_ci", "ref_proj_benign", "ref_gap", "ref_gap_ci", "ref_d", "ref_d_ci")
    if ref_dir is None:
        return dict.fromkeys(keys)
    held = ~torch.tensor(fit)
    y = torch.tensor(labels)[held]
    proj = X[held].double() @ ref_dir
    gap, d = separation_stats(proj[y == 1], proj[y == 0])
    gap_ci, d_ci = bootstrap_separation(proj, y, n_boot, seed)
    return dict(zip(keys, (float(proj[y == 1].mean()), list(bootstrap_mean(proj[y == 1], n_boot, seed)),
                           float(proj[y == 0].mean()), float(gap), gap_ci, float(d), d_ci)))
