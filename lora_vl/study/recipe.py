"""The `lora-vl study` recipe: which stage recipes make the study's runs, and how they are compared."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lora_vl.recipe import AT_LEAST_ONE, UNIT_INTERVAL, Range, RecipeError, field


@dataclass
class MergeSweep:
    recipe: str = field(help="merge recipe whose inputs are [VL adapter, safety adapter]; the study sets "
                        "their paths, output, overwrite and coefficients")
    safety: Literal["sft", "dpo"] = field("sft", help="which safety adapter is merged with the VL adapter")
    weights: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8, 1.0],
                                 help="coefficients λ of the safety adapter's ΔW (exact LoRA-space sum, "
                                 "ΔW_VL + λ ΔW_safety): the merge sweep")
    dense_method: Literal["ties", "dare", "dare_ties", "none"] = field(
        "ties", help="a dense merge method run beside the sweep (none: skip)")
    dense_weights: list[float] = field(default_factory=lambda: [1.0, 1.0],
                                       help="coefficients [VL, safety] of the dense merge")
    density: float = field(0.5, help="fraction of entries the dense method keeps", range=UNIT_INTERVAL)

    def validate(self, where: str) -> None:
        if len(self.weights) < 5:
            raise RecipeError(f"{where}.weights: the study sweeps at least 5 coefficients, got {self.weights}")
        if len(self.dense_weights) != 2:
            raise RecipeError(f"{where}.dense_weights: expected [VL, safety], got {self.dense_weights}")


@dataclass
class AnalysisSpec:
    harmful: list[str] = field(help="suite benchmarks whose (text) items are the harmful prompts")
    benign: list[str] = field(help="suite benchmarks whose (text) items are the benign prompts")
    limit: int | None = field(200, help="at most this many prompts per side", range=AT_LEAST_ONE)
    batch_size: int = field(16, help="prompts per forward pass", range=AT_LEAST_ONE)
    merge_weight: float | None = field(None, help="which sweep point is 'the merged model' of the analysis "
                                       "(default: the middle coefficient of the sweep)")


@dataclass
class StudyRecipe:
    output_dir: str = field(help="study folder: seed-N/ (each seed's runs), shared/, claims.md, claims.json, plots")
    llm: str = field(help="the aligned chat LLM (causal LM dir or hub id): the 'LLM alone' run and the "
                     "analysis reference")
    suite: str = field(help="evaluation suite YAML every run is evaluated on")
    adapt: str = field(help="VL adaptation recipe (`lora-vl adapt`)")
    safety_sft: str = field(help="post-hoc safety SFT recipe (`lora-vl safety`, method sft)")
    safety_dpo: str = field(help="safety DPO recipe (`lora-vl safety`, method dpo)")
    adapt_mixed: str = field(help="the mixed (simultaneous) setting: an adapt recipe with safety data in "
                             "stage 2; its projector is set to the seed's stage-1 projector")
    merge: MergeSweep = field(help="the merge sweep of the VL and safety adapters")
    snapshots: int = field(4, help="points of the ASR curve along stage 2 after step 0 (the last is the "
                           "final adapter): snapshot_every = stage-2 steps // snapshots", range=Range(4))
    snapshot_every: int | None = field(None, help="stage-2 optimizer steps between snapshots "
                                                  "(default: from `snapshots`)",
                                       range=AT_LEAST_ONE)
    analysis: AnalysisSpec | None = field(None, help="the safety-layer analysis (`lora-vl analyze`); omit to skip")
    seeds: list[int] = field(default_factory=lambda: [0], help="training seeds; the whole study runs once per seed")
    eval_overrides: list[str] = field(default_factory=list, help="key=value overrides of the suite "
                                      "(e.g. generation.batch_size=32)")

    def validate(self, where: str) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise RecipeError(f"{where}.seeds: expected distinct seeds, got {self.seeds}")
