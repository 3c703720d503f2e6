"""`model.trained_dtype` (issue 17): what trains (LoRA factors, a trained projector), hence its
gradients and Adam's states, kept in the compute dtype ("compute") instead of fp32 ("float32", the
default). Measured by the planner on the bf16 model it builds (the GPU's compute dtype) with tiny
models of real architectures: each trained tensor's dtype, the bytes the step saves, a real
optimizer step, and that the depth fit still predicts a deeper model from shallow ones."""
from __future__ import annotations

import pytest
import torch

from lora_vl.errors import InputError
from lora_vl.models import lora as L
from lora_vl.plan import tracker as T
from lora_vl.plan.build import Workload, build_llava, prepare
from lora_vl.plan.step import CATEGORIES, measure
from lora_vl.train.config import LoraSettings, OptimConfig

CPU = torch.device("cpu")
LORA = LoraSettings(r=8, alpha=16, dropout=0.0)
BF16 = torch.bfloat16


def workload(kind: str, trained_dtype: str, micro_batch: int = 1, length: int = 96,
             frozen_dtype: str = "float32") -> Workload:
    optim = OptimConfig(micro_batch_size=micro_batch, global_batch_size=2 * micro_batch)
    frozen = [LORA] if kind in ("sft", "dpo") else []
    return Workload(kind, "4bit", True, LORA if kind != "stage1" else None, frozen, optim, micro_batch, length,
                    frozen_dtype=frozen_dtype, trained_dtype=trained_dtype)


@pytest.mark.parametrize("kind", ["stage1", "stage2", "sft"])
def test_what_trains_is_kept_in_the_compute_dtype_and_the_frozen_weights_are_not_touched(shape, kind):
    for trained_dtype, want in (("float32", torch.float32), ("compute", BF16)):
        model = prepare(build_llava(shape.llava_config(2), "4bit", CPU, {}), workload(kind, trained_dtype)).model
        trained = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
        assert trained and set(trained.values()) == {want}, (trained_dtype, trained)
        if kind != "stage1":
            assert any("lora_A" in n for n in trained) and any("multi_modal_projector" in n for n in trained) \
                == (kind == "stage2")
        frozen = {p.dtype for n, p in model.named_parameters()
                  if not p.requires_grad and type(p).__name__ != "Params4bit" and "lora_" not in n}
        assert frozen == {torch.float32}  # frozen_dtype float32: PEFT's k-bit preparation, either way


def test_the_plan_holds_trained_weights_gradients_and_adam_states_at_half_the_bytes(shape):
    """By the planner's own step (a real AdamW step through the loop's optimizer_step): the LoRA
    and optimizer-state categories halve, the step's weights stay finite, and the peak drops by at
    least the bytes saved before the step."""
    runs = {d: measure(shape, workload("stage2", d, micro_batch=2), 2, 2, CPU, {}) for d in ("float32", "compute")}
    for cat in (CATEGORIES["lora"], T.OPTIM, CATEGORIES["projector"]):
        f32, c16 = runs["float32"].params[cat], runs["compute"].params[cat]
        assert c16 > 0 and abs(2 * c16 - f32) <= 2 * T.BLOCK * 64, (cat, f32, c16)
    saved = sum(runs["float32"].params[c] - runs["compute"].params[c]
                for c in (CATEGORIES["lora"], T.OPTIM, CATEGORIES["projector"]))
    assert runs["float32"].peak - runs["compute"].peak >= saved


def test_compute_follows_the_model_and_refuses_fp16(shape):
    """The compute dtype is the model's (read before preparation): fp32 on a CPU-loaded model, so
    "compute" changes nothing there; an fp16 model is refused, naming the key."""
    model = build_llava(shape.llava_config(1), "none", CPU, {})
    assert L.trained_dtype(model.float(), "compute") == torch.float32
    assert L.trained_dtype(model.to(BF16), "compute") == BF16
    with pytest.raises(InputError, match="model.trained_dtype"):
        L.trained_dtype(model.half(), "compute")
    assert L.trained_dtype(model, "float32") == torch.float32
    with pytest.raises(ValueError, match="trained_dtype 'bf16'"):
        L.trained_dtype(model, "bf16")
