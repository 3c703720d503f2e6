"""The `lora-vl analyze` recipe: which models, which prompts, which adapters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lora_vl.evaluation.suite import BenchmarkSpec
from lora_vl.recipe import AT_LEAST_ONE, NON_NEGATIVE, Range, RecipeError, field


@dataclass
class ModelEntry:
    name: str = field(help="label of this model in analysis.json and the plots (e.g. llm, vl, vl+safety)")
    base: str = field(help="a causal LM or a Llava checkpoint (local dir or hub id)")
    adapters: list[str] = field(default_factory=list, help="PEFT adapter dirs stacked on the base, in order")


@dataclass
class AdapterEntry:
    name: str = field(help="label of this adapter in analysis.json and the ΔW plot")
    path: str = field(help="a PEFT LoRA adapter directory")


@dataclass
class PromptSets:
    harmful: list[str] = field(help="benchmark names whose items are the harmful prompts")
    benign: list[str] = field(help="benchmark names whose items are the benign prompts")
    suite: str | None = field(None, help="an evaluation suite YAML whose benchmarks may be named here")
    benchmarks: list[BenchmarkSpec] = field(default_factory=list, help="benchmark specs given inline "
                                            "(same keys as a suite's benchmarks); may be named too")
    limit: int | None = field(200, help="at most this many prompts per side (seeded subset)",
                              range=AT_LEAST_ONE)
    images: bool = field(False, help="keep image items (every model must then be a Llava); "
                         "default: text-only items, so an LLM and its VL versions see the same prompts")
    seed: int = field(0, help="seed of the subsets and of the fit/held-out split")


@dataclass
class AnalyzeRecipe:
    output_dir: str = field(help="where analysis.json and the PNG plots go")
    prompts: PromptSets = field(help="the harmful and benign prompt sets, read by the kit's benchmark readers")
    models: list[ModelEntry] = field(default_factory=list, help="models whose hidden states are analysed")
    reference: str | None = field(None, help="name of the model whose refusal direction is the reference "
                                  "(the aligned LLM); default: the first model")
    delta_w: list[AdapterEntry] = field(default_factory=list, help="adapters whose per-layer ‖ΔW‖ is "
                                        "computed from their factors (default: every adapter of the models)")
    folds: int = field(5, help="cross-validation folds of the linear probe (held-out accuracy)",
                      range=Range(2))
    l2: float = field(1e-2, help="L2 penalty of the logistic probe (on standardised features)",
                      range=NON_NEGATIVE)
    bootstrap: int = field(1000, help="bootstrap resamples for the CI of the projection gap",
                           range=AT_LEAST_ONE)
    batch_size: int = field(8, help="prompts per forward pass", range=AT_LEAST_ONE)
    quantization: Literal["none", "4bit"] = field("none", help="load the models in 4-bit (NF4)")
    revision: str | None = field(None, help="hub revision of the bases")
    device: str | None = field(None, help="torch device (auto: cuda if available, else cpu)")
    check_adapter_base: bool = field(True, help="refuse adapters whose recorded base differs from the model's")

    def validate(self, where: str) -> None:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise RecipeError(f"{where}.models: names {names} are not unique")
        if not self.models and not self.delta_w:
            raise RecipeError(f"{where}: nothing to analyse; give models and/or delta_w")
        if self.reference is not None and self.reference not in names:
            raise RecipeError(f"{where}.reference: {self.reference!r} is not one of the models {names}")
        ws = [a.name for a in self.delta_w]
        if len(set(ws)) != len(ws):
            raise RecipeError(f"{where}.delta_w: names {ws} are not unique")

    @property
    def reference_name(self) -> str | None:
        return self.reference or (self.models[0].name if self.models else None)
