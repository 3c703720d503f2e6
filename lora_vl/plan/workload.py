"""Which work a recipe plans: the recipe file → model shape + `Workload`.

- an adapt recipe: stage 2 (LoRA + projector) by default, `--stage 1` for the projector stage;
- a safety recipe: its method (SFT, or DPO: B pairs = 2B rows, plus the reference pass), the
  frozen VL adapter stacked underneath (its rank read from the parent adapter when it exists);
- `--eval` with either, or an evaluation suite (`eval/*.yaml`): batched generation with the KV
  cache, the recipe's adapters stacked unmerged as `lora-vl eval` loads them.
"""
from __future__ import annotations

import json
from pathlib import Path

from lora_vl.errors import InputError
from lora_vl.evaluation.suite import Suite
from lora_vl.plan.build import Workload
from lora_vl.plan.shapes import ModelShape, compose_shape, recipe_shape
from lora_vl.recipe import RecipeError, load_recipe, read_yaml
from lora_vl.train.adapt import AdaptRecipe
from lora_vl.train.config import LoraSettings
from lora_vl.train.safety import SafetyRecipe


def recipe_kind(path: str) -> str:
    data = read_yaml(path)
    if "benchmarks" in data or "judges" in data:
        return "suite"
    if "method" in data:
        return "safety"
    if "stage2" in data:
        return "adapt"
    raise RecipeError(f"{path}: not an adapt recipe (stage2:), a safety recipe (method:) or an "
                      "evaluation suite (benchmarks:)")


def parent_settings(parent: str, fallback: LoraSettings) -> tuple[LoraSettings, str]:
    """The frozen VL adapter's LoRA settings: from its adapter_config.json when it exists."""
    config = Path(parent) / "adapter_config.json"
    if not config.is_file():
        return fallback, f"parent adapter {parent} not found: assumed the same LoRA settings (r {fallback.r})"
    try:
        c = json.loads(config.read_text())
        return LoraSettings(r=c["r"], alpha=c["lora_alpha"], dropout=c.get("lora_dropout", 0.0),
                            rslora=c.get("use_rslora", False)), f"parent adapter r {c['r']} from {config}"
    except (json.JSONDecodeError, KeyError) as e:
        raise InputError(f"{config}: not a readable PEFT adapter config ({e})") from e


def eval_workload(quantization: str, frozen: list, args, batch: int, new_tokens: int,
                  shape: ModelShape) -> Workload:
    prompt = args.prompt_length or shape.image_tokens + 128
    if prompt <= shape.image_tokens + 1:
        raise InputError(f"--prompt-length {prompt}: must exceed the {shape.image_tokens} image tokens")
    return Workload("eval", quantization, False, None, frozen, None, args.batch or batch, prompt,
                    new_tokens=args.new_tokens or new_tokens)


def memory_keys(model) -> dict:
    """The recipe's `model:` keys that change the step's memory, as `Workload` fields."""
    return {"loss_chunk_tokens": model.loss_chunk_tokens, "frozen_dtype": model.frozen_dtype,
            "trained_dtype": model.trained_dtype, "offload_checkpoints": model.offload_checkpoints}



def from_recipe(path: str, overrides: list[str], args) -> tuple[ModelShape, Workload, list[str]]:
    """(shape, workload, notes) for the recipe at `path` and the command-line choices."""
    kind = recipe_kind(path)
    notes: list[str] = []
    if kind == "suite":
        suite = load_recipe(Suite, path, overrides)
        if not (args.lm and args.vision):
            raise InputError(f"{path}: an evaluation suite names no model; give --lm ID --vision ID")
        shape = compose_shape(args.lm, args.vision)
        ranks = args.adapter_rank if args.adapter_rank is not None else [128]
        frozen = [LoraSettings(r=r, alpha=2 * r) for r in ranks]
        notes.append(f"adapters stacked: {len(frozen)} (ranks {ranks}; --adapter-rank to change)")
        budgets = [b.max_new_tokens for b in suite.benchmarks if b.max_new_tokens] + [suite.generation.max_new_tokens]
        return shape, eval_workload(suite.generation.quantization, frozen, args, suite.generation.batch_size,
                                    max(budgets), shape), notes
    if kind == "adapt":
        r = load_recipe(AdaptRecipe, path, overrides)
        shape = recipe_shape(r.model, args.lm, args.vision)
        if args.eval:
            return shape, eval_workload(r.model.quantization, [r.lora], args, 16, 512, shape), notes
        if args.stage == 1:
            if r.stage1 is None:
                raise InputError(f"{path}: --stage 1, but the recipe has no stage1 section")
            st = r.stage1
            return shape, Workload("stage1", r.model.quantization, r.model.gradient_checkpointing, None, [],
                                   st.optim, st.optim.micro_batch_size, st.data.max_length,
                                   **memory_keys(r.model)), notes
        st = r.stage2
        return shape, Workload("stage2", r.model.quantization, r.model.gradient_checkpointing, r.lora, [],
                               st.optim, st.optim.micro_batch_size, st.data.max_length,
                               **memory_keys(r.model)), notes
    r = load_recipe(SafetyRecipe, path, overrides)
    if args.stage is not None:
        raise InputError("--stage applies to adapt recipes; a safety recipe has one stage")
    shape = recipe_shape(r.model, args.lm, args.vision)
    parent, note = parent_settings(r.parent, r.lora)
    notes.append(note)
    if args.eval:
        return shape, eval_workload(r.model.quantization, [parent, r.lora], args, 16, 512, shape), notes
    st = getattr(r, r.method)
    w = Workload(r.method, r.model.quantization, r.model.gradient_checkpointing, r.lora, [parent],
                 st.optim, st.optim.micro_batch_size, st.data.max_length,
                 **memory_keys(r.model))
    if r.method == "dpo":
        w.beta, w.dpo_loss = st.beta, st.loss
    return shape, w, notes
