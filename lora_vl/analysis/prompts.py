"""Harmful and benign prompt sets from benchmark files, through the kit's evaluation readers."""
from __future__ import annotations

import random
from dataclasses import dataclass

from lora_vl.errors import InputError
from lora_vl.evaluation.items import EvalItem, seeded_subset
from lora_vl.evaluation.readers import read_benchmark
from lora_vl.evaluation.suite import Suite
from lora_vl.recipe import load_recipe


@dataclass
class PromptSet:
    items: list[EvalItem]
    labels: list[int]        # 1 = harmful, 0 = benign
    fit: list[bool]          # True: used to fit directions; False: held out to measure them
    sources: dict[str, list[str]]

    @property
    def n_harmful(self) -> int:
        return sum(self.labels)

    @property
    def n_benign(self) -> int:
        return len(self.labels) - self.n_harmful


def benchmark_specs(prompts) -> dict:
    """Name -> BenchmarkSpec: the suite's benchmarks, then the inline ones (which win)."""
    specs = {}
    if prompts.suite:
        specs.update({b.name: b for b in load_recipe(Suite, prompts.suite).benchmarks})
    specs.update({b.name: b for b in prompts.benchmarks})
    return specs


def _side(names: list[str], specs: dict, prompts, side: str) -> list[EvalItem]:
    items = []
    for name in names:
        if name not in specs:
            raise InputError(f"analyze prompts.{side}: benchmark {name!r} is neither in prompts.suite "
                             f"({prompts.suite}) nor in prompts.benchmarks; known: {sorted(specs)}")
        got = read_benchmark(specs[name], prompts.seed)
        if not prompts.images:
            got = [it for it in got if not it.has_image]
        if not got:
            raise InputError(f"analyze prompts.{side}: benchmark {name!r} has no "
                             f"{'' if prompts.images else 'text-only '}items (set prompts.images: true "
                             "to use image items with Llava models)")
        items += got
    return seeded_subset(items, prompts.limit, prompts.seed)


def halves(n: int, rng: random.Random) -> list[bool]:
    """A seeded half/half split of n prompts: True = fit."""
    order = list(range(n))
    rng.shuffle(order)
    fit = [False] * n
    for i in order[: (n + 1) // 2]:
        fit[i] = True
    return fit


def read_prompt_sets(prompts) -> PromptSet:
    """The harmful and benign items, and a fit/held-out split made per side (same for every model)."""
    specs = benchmark_specs(prompts)
    harmful = _side(prompts.harmful, specs, prompts, "harmful")
    benign = _side(prompts.benign, specs, prompts, "benign")
    for side, got in (("harmful", harmful), ("benign", benign)):
        if len(got) < 4:
            raise InputError(f"analyze prompts.{side}: {len(got)} prompts; expected at least 4 "
                             "(the probe needs held-out folds)")
    rng = random.Random(prompts.seed)
    return PromptSet(harmful + benign, [1] * len(harmful) + [0] * len(benign),
                     halves(len(harmful), rng) + halves(len(benign), rng),
                     {"harmful": list(prompts.harmful), "benign": list(prompts.benign)})
