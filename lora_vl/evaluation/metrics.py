"""Rates with Wilson intervals, bootstrap intervals, judge agreement (Cohen's kappa), MME score.

Written by hand because these few formulas are all we need (no statsmodels/sklearn dependency).
"""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (Wilson 1927)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the exact ends at k=0 and k=n (the formula gives them up to float round-off)
    return (0.0 if k == 0 else max(0.0, center - half), 1.0 if k == n else min(1.0, center + half))


def bootstrap(units: Sequence, stat: Callable[[list], float], n_boot: int, seed: int,
              strata: Callable | None = None) -> tuple[float, float]:
    """Percentile 95% interval of `stat` over `units` resampled with replacement (within strata)."""
    if not units:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    groups: dict = {}
    for u in units:
        groups.setdefault(strata(u) if strata else 0, []).append(u)
    values = []
    for _ in range(n_boot):
        sample = [rng.choice(g) for g in groups.values() for _ in g]
        values.append(stat(sample))
    values.sort()
    return (values[int(0.025 * (n_boot - 1))], values[int(math.ceil(0.975 * (n_boot - 1)))])


def rate(flags: list[bool | None], **info) -> dict:
    """A rate over the judged items; None (unparsed) is reported, not counted either way."""
    judged = [f for f in flags if f is not None]
    k, n = sum(judged), len(judged)
    return {"value": k / n if n else None, "k": k, "n": n, "unparsed": len(flags) - n,
            "ci": list(wilson(k, n)), "ci_method": "wilson", **info}


def cohen_kappa(a: list[bool], b: list[bool]) -> float | None:
    """Cohen's kappa for two binary raters (Cohen 1960); None when chance agreement is 1."""
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe == 1 else (po - pe) / (1 - pe)


def agreement(a: list[bool | None], b: list[bool | None]) -> dict:
    """Agreement and kappa over the items both judges parsed."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    agree = sum(x == y for x, y in pairs)
    return {"n": len(pairs), "agreement": agree / len(pairs) if pairs else None,
            "agreement_ci": list(wilson(agree, len(pairs))), "kappa": cohen_kappa(xs, ys)}


def mme_score(rows: list[tuple[str, str, bool]]) -> float:
    """MME score: sum over categories of (acc + acc+) x 100, where acc+ needs both questions of an
    image right. rows: (category, image group, correct)."""
    by_cat: dict[str, dict[str, list[bool]]] = {}
    for cat, group, ok in rows:
        by_cat.setdefault(cat, {}).setdefault(group, []).append(ok)
    total = 0.0
    for groups in by_cat.values():
        answers = [ok for g in groups.values() for ok in g]
        acc = sum(answers) / len(answers)
        acc_plus = sum(all(g) for g in groups.values()) / len(groups)
        total += 100 * (acc + acc_plus)
    return total
