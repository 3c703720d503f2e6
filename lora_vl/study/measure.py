"""The study's measurements: `lora-vl eval` on every run, `lora-vl analyze` on the key models."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from lora_vl.analysis.recipe import AnalyzeRecipe
from lora_vl.analysis.run import run_analysis
from lora_vl.evaluation.run import run_suite
from lora_vl.evaluation.suite import Suite
from lora_vl.recipe import build, load_recipe


@dataclass
class Run:
    """One evaluated model: a base plus stacked adapters."""
    name: str
    base: str
    adapters: list[str] = field(default_factory=list)
    step: int | None = None        # stage-2 step, for the runs of the ASR curve
    merge_weight: float | None = None  # λ of the safety adapter, for the merge sweep
    is_merge: bool = False             # a merged adapter (the sweep's points and the dense merge)

    def as_dict(self) -> dict:
        return asdict(self)


def load_suite(path: str, overrides: list[str], cache: Path):
    """The suite with the study's overrides; one generation cache for the whole study, so a model
    evaluated twice (e.g. the last snapshot and the final adapter, when identical) is generated once."""
    return load_recipe(Suite, path, [*overrides, f"cache={cache}"])


def evaluate(run: Run, suite, suite_path: str, out: Path) -> dict:
    """Evaluate one run; returns its results.json (written under `out`)."""
    return run_suite(suite, run.base, list(run.adapters), out, suite_path=suite_path)


def analyse(spec, suite_path: str, quantization: str, runs: list[Run], adapters: dict[str, str], out: Path) -> dict:
    """`lora-vl analyze` on `runs` (the first is the reference, the aligned LLM) and the ΔW of `adapters`."""
    recipe = build(AnalyzeRecipe, {
        "output_dir": str(out), "reference": runs[0].name, "batch_size": spec.batch_size,
        "quantization": quantization,
        "prompts": {"suite": suite_path, "harmful": list(spec.harmful), "benign": list(spec.benign),
                    "limit": spec.limit},
        "models": [{"name": r.name, "base": r.base, "adapters": list(r.adapters)} for r in runs],
        "delta_w": [{"name": n, "path": p} for n, p in adapters.items()]}, where="study analysis")
    return run_analysis(recipe)
