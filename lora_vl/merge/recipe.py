"""The `lora-vl merge` recipe schema (YAML; every key overridable as key=value)."""
from __future__ import annotations

from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any, Literal

from lora_vl.merge import algebra, dense  # noqa: F401  (the methods register themselves)
from lora_vl.merge.methods import METHODS, all_settings, describe
from lora_vl.merge.schedule import parse_layers
from lora_vl.recipe import AT_LEAST_ONE, NON_NEGATIVE, RecipeError, field


@dataclass
class MergeInput:
    path: str = field(help="adapter directory (adapter_config.json + adapter_model.safetensors)")
    weight: float = field(1.0, help="coefficient λ of this adapter's delta; negative subtracts it")
    name: str | None = field(None, help="name used in manifests and modules_to_save (default: folder name)")
    layers: str | None = field(None, help="only these decoder layers, e.g. '8-16' or '0-3,20'; 0 elsewhere")
    ramp: list[float] | None = field(None, help="[start, end]: λ times a factor linear in depth, from "
                                     "start at the first (selected) layer to end at the last")
    module_weights: dict[str, float] = field(default_factory=dict, help="regex -> factor on λ for matching "
                                             "module names, e.g. {'mlp': 0.5}; all matches multiply")

    def validate(self, where: str) -> None:
        if self.layers is not None:
            try:
                parse_layers(self.layers, f"{where}.layers")
            except ValueError as e:
                raise RecipeError(str(e)) from e
        if self.ramp is not None and len(self.ramp) != 2:
            raise RecipeError(f"{where}.ramp: expected [start, end], got {self.ramp!r}")

    @property
    def layer_list(self) -> list[int] | None:
        return parse_layers(self.layers, "layers") if self.layers is not None else None


@dataclass
class MergeRecipeBase:
    """The keys every merge has; each method's own settings are added below from the registry."""
    inputs: list[MergeInput] = field(help="the adapters to merge (same base model)")
    output: str = field(help="output adapter directory (for a sweep: the folder of all points + sweep.json)")
    weights: list[float] | None = field(None, help="optional: one λ per input, replacing inputs[].weight")
    method: str = field("sum", help="merge method; dense methods merge per module and factor back to "
                        "`rank`. One of: " + describe())
    rank: int | None = field(None, help="target rank: SVD-compress the result (sum: default none = exact; "
                             "dense methods: default the largest input rank of the module)", range=AT_LEAST_ONE)
    seed: int = field(0, help="seed of the random drops (DARE, DELLA) and of the randomized SVD")
    svd: Literal["auto", "exact", "randomized"] = field(
        "auto", help="dense methods: how to factor back (randomized for large modules; error is reported)")
    svd_niter: int = field(1, help="power iterations of the randomized SVD, which starts from the inputs' "
                           "LoRA row spaces: 2·niter + 1 passes over each dense delta (0: 2). 1 lands within "
                           "2e-6 of the exact SVD's error on 7B-shaped TIES merges, 0 within 7e-5 and ~20% "
                           "faster", range=NON_NEGATIVE)
    modules_to_save: str = field("average", help="projector & other saved modules: 'average' (weighted by "
                                 "the positive input weights), 'none', or an input name / index to copy")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        "auto", help="stored dtype of the result (auto: the most precise input dtype)")
    base_model: str | None = field(None, help="base_model_name_or_path written to the result "
                                   "(default: the inputs' common one)")
    overwrite: bool = field(False, help="replace an existing output (only after the new one is complete)")
    sweep: dict[str, list[Any]] = field(default_factory=dict, help="grid of key -> values, e.g. "
                                        "{'inputs.1.weight': [0, 0.5, 1]}; one adapter per point + sweep.json")

    def validate(self, where: str) -> None:
        if not self.inputs:
            raise RecipeError(f"{where}.inputs: expected at least one adapter")
        if self.method not in METHODS:
            raise RecipeError(f"{where}.method: unknown merge method {self.method!r}; expected one of "
                              f"{sorted(METHODS)}")
        if self.weights is not None and len(self.weights) != len(self.inputs):
            raise RecipeError(f"{where}.weights: {len(self.weights)} value(s) for {len(self.inputs)} "
                              "input(s); expected one weight per input")
        method = METHODS[self.method]
        for key, setting in method.settings.items():
            problem = setting.problem(getattr(self, key))
            if problem:
                raise RecipeError(f"{where}.{key}: {problem}")
        problem = method.check(method.values(self)) if method.check else None
        if problem:
            raise RecipeError(f"{where}: {problem}")
        names = self.input_names
        if len(set(names)) != len(names):
            raise RecipeError(f"{where}.inputs: names {names} are not unique; set inputs[].name")

    @property
    def input_names(self) -> list[str]:
        """Explicit names, else the folder name, else parent/folder when folder names collide."""
        names = [inp.name or Path(inp.path).name for inp in self.inputs]
        if len(set(names)) < len(names):
            names = [inp.name or "/".join(Path(inp.path).parts[-2:]) for inp in self.inputs]
        return names

    @property
    def input_weights(self) -> list[float]:
        return list(self.weights) if self.weights is not None else [inp.weight for inp in self.inputs]


# One recipe key per merge-method setting (`merge/methods.py`): schema, `--help` and validation
# follow the registry, so a method with its own settings needs no edit here.
MergeRecipe = make_dataclass("MergeRecipe", [(name, float, field(s.default, help=f"{'/'.join(users)}: {s.help}"))
                                             for name, (s, users) in all_settings().items()],
                             bases=(MergeRecipeBase,))
MergeRecipe.__module__ = __name__
MergeRecipe.__doc__ = "The `lora-vl merge` recipe: the keys every merge has, plus every method's settings."
