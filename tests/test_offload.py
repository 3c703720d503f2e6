"""`model.offload_checkpoints` (issue 17): each checkpointed layer's saved input (the activation
checkpoint) waits in pinned host memory on a GPU (transformers' checkpointing offload). On the CPU
nothing moves; the planner measures the GPU's peak with the move (`plan/step.py:HostOffload`).
Tiny models of the real architecture."""
from __future__ import annotations

import pytest
import torch

from lora_vl.plan import tracker as T
from lora_vl.plan.build import Workload, build_llava, prepare
from lora_vl.plan.fit import DepthFit
from lora_vl.plan.step import HostOffload, make_batch, measure
from lora_vl.recipe import RecipeError, build
from lora_vl.train.config import LoraSettings, ModelConfig, OptimConfig
from lora_vl.train.loop import accumulate, autocast_policy, to_device

CPU = torch.device("cpu")
LORA = LoraSettings(r=8, alpha=16, dropout=0.0)


def workload(kind: str, offload_checkpoints: bool, micro_batch: int = 2, length: int = 96) -> Workload:
    optim = OptimConfig(micro_batch_size=micro_batch, global_batch_size=2 * micro_batch)
    frozen = [LORA] if kind in ("sft", "dpo") else []
    # frozen weights and the residual stream in fp32 (the byte counts below), whatever the default
    return Workload(kind, "4bit", True, LORA, frozen, optim, micro_batch, length,
                    offload_checkpoints=offload_checkpoints, frozen_dtype="float32")


@pytest.mark.parametrize("layers", [2, 4])
def test_the_plan_moves_the_checkpoints_to_host_memory(shape, layers):
    """The planner's own step with and without the offload: the activations at the peak no longer
    grow with depth (the checkpoints are in host memory, counted there), the tracked peak drops, and
    weights, optimizer state and inputs are the same."""
    runs = {o: measure(shape, workload("stage2", o), layers, 2, CPU, {}) for o in (False, True)}
    host = runs[True].stats["host_offload_peak"]
    assert host > 0 and "host_offload_peak" not in runs[False].stats
    act = {o: max(p.breakdown.get(T.ACTIVATIONS, 0) for p in r.phases.values()) for o, r in runs.items()}
    # all the checkpoints but the one the backward has brought back (the peak is in a layer's backward)
    assert act[False] - act[True] >= host * (layers - 1) / layers, (act, host)
    assert runs[True].peak < runs[False].peak
    assert runs[True].params == runs[False].params


def test_depth_slope_of_the_activations_is_gone_with_the_offload(shape):
    """Per extra layer the step keeps one checkpoint (rows × length × hidden) alive without the
    offload; with it, none on the device and one more in host memory."""
    act, host = {}, {}
    for layers in (2, 4):
        for o in (False, True):
            m = measure(shape, workload("stage2", o), layers, 2, CPU, {})
            act[o, layers] = max(p.breakdown.get(T.ACTIVATIONS, 0) for p in m.phases.values())
            host[o, layers] = m.stats.get("host_offload_peak", 0)
    checkpoint = 2 * 96 * shape.text.hidden_size * 4  # fp32 residual stream on the planner's CPU step
    assert act[False, 4] - act[False, 2] >= 2 * checkpoint
    assert act[True, 4] == act[True, 2]
    assert host[True, 4] - host[True, 2] >= 2 * checkpoint


def test_gradients_are_the_same_with_the_checkpoints_moved(shape):
    """The move there and back gives exactly the gradients of the step without it."""
    grads, weights = {}, {}  # one cache: the same random base weights for both
    for moved in (False, True):
        w = workload("stage2", moved, micro_batch=1)
        st = prepare(build_llava(shape.llava_config(2), "4bit", CPU, weights), w)
        host = HostOffload()
        if moved:
            assert host.install(st.model) >= 2  # both decoder layers (and the vision layers, checkpointed too)
        st.model.train()  # checkpointing (and so the move) only in training mode
        batch = to_device(make_batch(shape, 1, w.length), CPU, st.pixel_dtype)
        count = st.loss_fn.count(batch)
        accumulate(st.model, 0, [(0, batch)], [count], count, 1, st.loss_fn, w.optim, CPU, st.pixel_dtype,
                   autocast=autocast_policy("cpu"))
        grads[moved] = {n: p.grad.clone() for n, p in st.model.named_parameters() if p.grad is not None}
        if moved:
            assert host.peak > 0 and host.live == 0  # moved, then released after the backward
    assert grads[False].keys() == grads[True].keys() and grads[False]
    for n, g in grads[False].items():
        assert torch.equal(g, grads[True][n]), n


def test_training_preparation_hands_the_offload_to_transformers(shape):
    """The stage's preparation (training and plan alike) asks transformers' checkpointing for the
    offload: its checkpoint call then runs under torch's save_on_cpu (a no-op on this CPU)."""
    from torch.utils.checkpoint import checkpoint
    for moved in (False, True):
        model = prepare(build_llava(shape.llava_config(2), "4bit", CPU, {}), workload("stage2", moved)).model
        funcs = {getattr(m, "_gradient_checkpointing_func", None) for m in model.modules()} - {None}
        assert funcs and all((f.func is not checkpoint) == moved and f.keywords == {"use_reentrant": False}
                             for f in funcs), (moved, funcs)


@pytest.mark.slow
def test_depth_fit_from_1_2_4_layers_predicts_8_layers_with_the_offload(shape):
    w = workload("stage2", True, micro_batch=1)
    cache = {}
    runs = [measure(shape, w, n, 1, CPU, cache) for n in (1, 2, 4, 8)]
    fit = DepthFit(runs[:3])
    assert fit.predict(8).total == pytest.approx(runs[3].peak, rel=0.01)
    assert fit.residual() < 0.01


def test_offload_without_checkpointing_is_refused():
    with pytest.raises(RecipeError, match="offload_checkpoints .* needs gradient_checkpointing"):
        build(ModelConfig, {"base": "b", "gradient_checkpointing": False, "offload_checkpoints": True})
