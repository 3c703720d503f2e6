"""`model.frozen_dtype` (issue 17): under 4-bit training the frozen weights that are not 4-bit stay in
the compute dtype ("compute") instead of PEFT's fp32 ("float32", the default); what trains is fp32
either way. Measured by the planner on the bf16 model it builds (the GPU's compute dtype) with tiny
models of real architectures: which dtype each tensor has, the bytes it saves, the residual stream's
dtype, and that the depth fit still predicts a deeper model from shallow ones."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from lora_vl.plan import tracker as T
from lora_vl.plan.build import Workload, build_llava, prepare
from lora_vl.plan.fit import DepthFit
from lora_vl.plan.step import CATEGORIES, known_tensors, measure
from lora_vl.train.config import LoraSettings, OptimConfig

CPU = torch.device("cpu")
LORA = LoraSettings(r=8, alpha=16, dropout=0.0)
BF16 = torch.bfloat16


def workload(kind: str, frozen_dtype: str, micro_batch: int = 1, length: int = 96) -> Workload:
    optim = OptimConfig(micro_batch_size=micro_batch, global_batch_size=2 * micro_batch)
    frozen = [LORA] if kind in ("sft", "dpo") else []
    return Workload(kind, "4bit", True, LORA if kind != "stage1" else None, frozen, optim, micro_batch, length,
                    frozen_dtype=frozen_dtype)


def prepared(shape, kind: str, frozen_dtype: str, layers: int = 2):
    return prepare(build_llava(shape.llava_config(layers), "4bit", CPU, {}), workload(kind, frozen_dtype))


@pytest.mark.parametrize("kind", ["stage1", "stage2", "sft"])
def test_frozen_weights_keep_the_compute_dtype_and_what_trains_is_fp32(shape, kind):
    for frozen_dtype, want in (("float32", torch.float32), ("compute", BF16)):
        model = prepared(shape, kind, frozen_dtype).model
        trained = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
        assert trained and set(trained.values()) == {torch.float32}, (frozen_dtype, trained)
        frozen = {n: p.dtype for n, p in model.named_parameters()
                  if not p.requires_grad and type(p).__name__ != "Params4bit" and "lora_" not in n}
        assert any(".vision_tower." in n for n in frozen) and any("lm_head" in n for n in frozen)
        assert set(frozen.values()) == {want}, (frozen_dtype, {n: d for n, d in frozen.items() if d != want})
        if kind == "sft":  # the VL adapter's frozen projector copy and LoRA factors follow the base
            copies = [n for n in frozen if "multi_modal_projector" in n and "modules_to_save" in n]
            assert copies, sorted(frozen)
            adapter = {n: p.dtype for n, p in model.named_parameters() if not p.requires_grad and ".lora_" in n}
            assert adapter and set(adapter.values()) == {want}, (frozen_dtype, adapter)


def test_dpo_keeps_the_frozen_adapter_in_the_compute_dtype_across_its_reference_pass(shape):
    """DPO switches the safety adapter off for its reference and back on (PEFT's set_adapter): the
    frozen VL adapter stays bf16 and frozen, the safety adapter fp32 and trainable."""
    prep = prepare(build_llava(shape.llava_config(2), "4bit", CPU, {}), workload("dpo", "compute"))
    with prep.loss_fn.reference():
        pass
    lora = {n: (p.dtype, p.requires_grad) for n, p in prep.model.named_parameters() if ".lora_" in n}
    assert {v for n, v in lora.items() if ".default." not in n} == {(BF16, False)}, lora
    assert {v for n, v in lora.items() if ".default." in n} == {(torch.float32, True)}, lora


def test_the_safety_plan_holds_the_frozen_adapter_at_half_the_bytes(shape):
    runs = {d: measure(shape, workload("sft", d), 2, 1, CPU, {}) for d in ("float32", "compute")}
    cat = CATEGORIES["frozen_lora"]
    f32, c16 = runs["float32"].params[cat], runs["compute"].params[cat]
    assert 0 < c16 < f32 and 2 * c16 == pytest.approx(f32, rel=0.02), (f32, c16)


def test_the_embedding_output_hence_the_residual_stream_is_in_the_compute_dtype(shape):
    ids = torch.tensor([[1, 2, 3]])
    for frozen_dtype, want in (("float32", torch.float32), ("compute", BF16)):
        model = prepared(shape, "stage2", frozen_dtype).model
        assert model.get_input_embeddings()(ids).dtype == want


def test_the_plan_holds_the_frozen_weights_at_half_the_bytes_and_a_lower_peak(shape):
    """Measured by the planner's own step: the frozen 16-bit categories halve (to the allocator's
    512-byte blocks), and the step's peak drops by at least that (activations shrink too)."""
    runs = {d: measure(shape, workload("stage2", d, micro_batch=2), 2, 2, CPU, {}) for d in ("float32", "compute")}
    for key in ("base16", "vision"):
        cat = CATEGORIES[key]
        f32, c16 = runs["float32"].params[cat], runs["compute"].params[cat]
        assert c16 > 0 and abs(2 * c16 - f32) <= 2 * T.BLOCK * 64, (cat, f32, c16)
    saved = sum(runs["float32"].params[CATEGORIES[k]] - runs["compute"].params[CATEGORIES[k]]
                for k in ("base16", "vision"))
    act = {d: max(p.breakdown.get(T.ACTIVATIONS, 0) for p in r.phases.values()) for d, r in runs.items()}
    assert act["compute"] < act["float32"], act
    assert runs["float32"].peak - runs["compute"].peak >= saved


@pytest.mark.slow
@pytest.mark.parametrize("kind,trained_dtype", [("stage2", "float32"), ("dpo", "float32"), ("stage2", "compute")])
def test_depth_fit_from_1_2_4_layers_predicts_8_layers_with_frozen_weights_in_bf16(shape, kind, trained_dtype):
    """...and with what trains in bf16 too (`model.trained_dtype: compute`)."""
    w = dataclasses.replace(workload(kind, "compute"), trained_dtype=trained_dtype)
    cache = {}
    runs = [measure(shape, w, n, 1, CPU, cache) for n in (1, 2, 4, 8)]
    fit = DepthFit(runs[:3])
    assert fit.predict(8).total == pytest.approx(runs[3].peak, rel=0.01)
    assert fit.residual() < 0.01


def test_known_tensors_cover_every_parameter_under_either_dtype(shape):
    """The planner's categories still account for every tensor when the base stays bf16."""
    model = prepared(shape, "sft", "compute").model
    counted = {id(t) for ts in known_tensors(model).values() for t in ts}
    assert all(id(p) in counted for p in model.parameters())

