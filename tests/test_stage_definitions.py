"""One definition per stage: the model `lora-vl plan` measures is the model `lora-vl adapt` /
`safety` / `eval` train or evaluate (same trainable tensors, same optimizer groups), and a change
to a stage's step shows up in the plan by exactly its bytes. Tiny models of real architectures."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from lora_vl.evaluation.model_io import load_eval_model
from lora_vl.evaluation.suite import GenerationSpec
from lora_vl.plan import build as plan_build
from lora_vl.plan.build import build_llava, prepare
from lora_vl.plan.cli import parser
from lora_vl.plan.fit import DepthFit
from lora_vl.plan.step import measure
from lora_vl.plan.tracker import rounded
from lora_vl.plan.workload import from_recipe
from lora_vl.recipe import build
from lora_vl.train import prepare as S
from lora_vl.train.adapt import AdaptRecipe, stage1_setup, stage2_setup
from lora_vl.train.loop import make_optimizer
from lora_vl.train.safety import build_training
from safety_helpers import dpo_recipe, safety_world, sft_recipe  # noqa: F401  (session fixture)

CPU = torch.device("cpu")


def adapt_recipe(world: dict, out: Path) -> AdaptRecipe:
    """Distinct learning rates and weight decay per stage, so a group that drifts is seen."""
    stage = lambda lr: {"data": {"sources": [{"format": "llava_json", "path": "unused.json"}], "max_length": 96},  # noqa: E731
                        "optim": {"lr": lr, "lr_projector": lr / 10, "weight_decay": 0.05, "seed": 3,
                                  "micro_batch_size": 1, "global_batch_size": 2}}
    return build(AdaptRecipe, {"output_dir": str(out), "model": {"base": str(world["base"]), "loss_chunk_tokens": 24},
                               "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
                               "stage1": stage(1e-3), "stage2": stage(2e-4)})


def planned(recipe, tmp: Path, *flags: str):
    """The plan's model for `recipe` (a YAML as a user writes it), at the base's full depth."""
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(recipe)))
    shape, w, _ = from_recipe(str(path), [], parser().parse_args([str(path), *flags]))
    return prepare(build_llava(shape.llava_config(), w.quantization, CPU, {}), w), w


def trainables(st) -> dict[str, tuple]:
    return {n: (tuple(p.shape), p.dtype) for n, p in st.model.named_parameters() if p.requires_grad}


def optimizer_groups(st, optim) -> list[tuple]:
    names = {id(p): n for n, p in st.model.named_parameters()}
    return [(g["lr"], g["weight_decay"], sorted(names[id(p)] for p in g["params"]))
            for g in make_optimizer(st.groups, optim).param_groups]


def assert_same_stage(trained, plan, optim) -> None:
    assert trainables(trained) and trainables(plan) == trainables(trained)
    assert optimizer_groups(plan, optim) == optimizer_groups(trained, optim)
    assert type(plan.loss_fn) is type(trained.loss_fn) and vars(plan.loss_fn).keys() == vars(trained.loss_fn).keys()
    assert plan.loss_fn.chunk == trained.loss_fn.chunk  # the recipe's model.loss_chunk_tokens, in both


@pytest.mark.parametrize("stage", [1, 2])
def test_adapt_stages_plan_the_model_they_train(safety_world, tmp_path, stage):
    r = adapt_recipe(safety_world, tmp_path / "run")
    trained = stage1_setup(r, r.model.base)[0] if stage == 1 else stage2_setup(r, r.model.base, None)[0]
    plan, w = planned(r, tmp_path, "--stage", str(stage))
    assert_same_stage(trained, plan, r.stage1.optim if stage == 1 else r.stage2.optim)
    assert w.policy == S.BasePolicy.of(r.model)
    if stage == 2:  # the projector at its own learning rate, LoRA at the stage's
        assert sorted(g[0] for g in optimizer_groups(plan, r.stage2.optim)) == [2e-5, 2e-4]


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_safety_stages_plan_the_model_they_train(safety_world, tmp_path, method):
    make = sft_recipe if method == "sft" else dpo_recipe
    r = make(safety_world, tmp_path / "run", lr=3e-3, weight_decay=0.05)
    r.model.gradient_checkpointing = True
    r.model.loss_chunk_tokens = 40
    r.model.frozen_dtype = "compute"
    r.model.offload_checkpoints = True  # (trained_dtype: the plan trains bf16 as a GPU would, this CPU fp32)
    trained = build_training(r, safety_world["base"], safety_world["vl"])[0]
    plan, w = planned(r, tmp_path)
    assert_same_stage(trained, plan, getattr(r, method).optim)
    assert w.policy == S.BasePolicy.of(r.model) == S.BasePolicy(True, True, 40, "compute", "float32", True)
    from torch.utils.checkpoint import checkpoint

    def offloading(m):  # the layers' checkpoint call wrapped by transformers' offload
        funcs = {getattr(x, "_gradient_checkpointing_func", None) for x in m.modules()} - {None}
        return bool(funcs) and all(f.func is not checkpoint for f in funcs)
    assert offloading(trained.model) and offloading(plan.model)  # trained as the plan accounted for
    if method == "dpo":
        assert (plan.loss_fn.beta, plan.loss_fn.loss_type) == (trained.loss_fn.beta, trained.loss_fn.loss_type)


def test_evaluation_plans_the_model_it_evaluates(safety_world, tmp_path):
    """The VL adapter stacked as `lora-vl eval` loads it: same adapter tensors, none trainable."""
    r = adapt_recipe(safety_world, tmp_path / "run")
    em = load_eval_model(str(safety_world["base"]), [str(safety_world["vl"])],
                         build(GenerationSpec, {"quantization": "4bit"}))
    plan, _ = planned(r, tmp_path, "--eval")
    shapes = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters() if "lora_" in n or "modules_to_save" in n}  # noqa: E731
    assert shapes(em.model) and shapes(plan) == shapes(em.model)
    assert not any(p.requires_grad for p in plan.parameters()) and not plan.training


def test_a_tensor_the_stage_keeps_alive_is_in_the_plan_to_the_byte(safety_world, tmp_path, monkeypatch):
    """A stage whose loss keeps one more tensor alive through the step (as a change to a stage
    would): the plan's prediction grows by exactly that tensor's bytes, at every depth."""
    r = adapt_recipe(safety_world, tmp_path / "run")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(r)))
    shape, w, _ = from_recipe(str(path), [], parser().parse_args([str(path)]))

    def predicted() -> int:
        return DepthFit([measure(shape, w, n, 1, CPU, {}) for n in (1, 2)]).predict(4).total

    before = predicted()
    kept = []
    extra = 3 * 2 ** 20  # bytes; a multiple of the 512-byte block, so rounding adds nothing
    lora_stage = S.lora_stage

    def keeps_one_more(*args, **kwargs):
        st = lora_stage(*args, **kwargs)
        loss_fn = st.loss_fn

        class KeepsATensor(type(loss_fn)):
            def __call__(self, model, batch, num_items):
                kept.append(torch.empty(extra, dtype=torch.uint8))  # alive until the step is over
                return loss_fn(model, batch, num_items)
        return dataclasses.replace(st, loss_fn=KeepsATensor())

    monkeypatch.setattr(S, "lora_stage", keeps_one_more)
    assert plan_build.S.lora_stage is keeps_one_more  # the planner calls the stage, not a copy
    after = predicted()
    assert kept  # the planner ran the stage's loss
    # the step's two micro-batches each keep one: both are alive at the optimizer step
    assert rounded(extra) == extra and after - before == 2 * extra


def test_the_stage_policy_and_the_plans_workload_default_as_the_recipe_does():
    """The memory keys' defaults live in `ModelConfig` alone: a stage policy or a planner workload built
    without them takes the recipe's defaults (since 2026-12-04 frozen weights in the compute dtype and
    the loss in 1024-token chunks), so a default changes once for training and planning alike."""
    from lora_vl.plan.build import Workload
    from lora_vl.train.config import ModelConfig

    m = ModelConfig(base="b")
    assert (m.frozen_dtype, m.loss_chunk_tokens, m.trained_dtype, m.offload_checkpoints) == \
        ("compute", 1024, "float32", False)
    assert S.BasePolicy(True, True) == S.BasePolicy.of(m)
    w = Workload("stage2", "4bit", True, None, [], None, 1, 8)
    assert w.policy == S.BasePolicy.of(m)
