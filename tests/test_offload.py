"""`model.offload_checkpoints` (issue 17): what the forward saves outside the checkpointed layers
goes to host memory on a GPU. On the CPU nothing moves; the planner measures the GPU's peak with
the move (`plan/step.py:HostOffload`). Tiny models of the real architecture, so the size floor for
a move (`offload.MIN_BYTES`, 1 MiB) is lowered to let their activations move."""
from __future__ import annotations

import pytest
import torch

from lora_vl.plan import tracker as T
from lora_vl.plan.build import Workload, build_llava, prepare
from lora_vl.plan.fit import DepthFit
from lora_vl.plan.shapes import base_shape
from lora_vl.plan.step import HostOffload, make_batch, measure
from lora_vl.train import offload
from lora_vl.train.config import LoraSettings, OptimConfig
from lora_vl.train.loop import accumulate, autocast_policy, to_device

CPU = torch.device("cpu")
LORA = LoraSettings(r=8, alpha=16, dropout=0.0)


@pytest.fixture(scope="module")
def shape(tiny_bases):
    return base_shape(str(tiny_bases[("llama", "clip")]))


@pytest.fixture
def small_floor(monkeypatch):
    monkeypatch.setattr(offload, "MIN_BYTES", 4096)


def workload(kind: str, offload_checkpoints: bool, micro_batch: int = 2, length: int = 96) -> Workload:
    optim = OptimConfig(micro_batch_size=micro_batch, global_batch_size=2 * micro_batch)
    frozen = [LORA] if kind in ("sft", "dpo") else []
    return Workload(kind, "4bit", True, LORA, frozen, optim, micro_batch, length,
                    offload_checkpoints=offload_checkpoints)


def test_what_moves_is_large_and_not_a_weight(small_floor):
    assert offload.moves(torch.zeros(2048))  # 8 KiB
    assert not offload.moves(torch.zeros(16))
    assert not offload.moves(torch.nn.Parameter(torch.zeros(4096)))
    assert isinstance(offload.saved_tensors(True, CPU), type(offload.saved_tensors(False, CPU)))  # CPU: no hooks


def test_the_plan_moves_the_checkpoints_to_host_memory_and_the_peak_drops_by_them(shape, small_floor):
    """The planner's own step with and without the offload: host bytes counted, the tracked peak
    and the activations at the peak lower, everything else the same."""
    runs = {o: measure(shape, workload("stage2", o), 2, 2, CPU, {}) for o in (False, True)}
    host = runs[True].stats["host_offload_peak"]
    assert host > 0 and "host_offload_peak" not in runs[False].stats
    assert runs[True].peak < runs[False].peak
    act = {o: max(p.breakdown.get(T.ACTIVATIONS, 0) for p in r.phases.values()) for o, r in runs.items()}
    assert act[True] < act[False], act
    assert runs[True].params == runs[False].params  # weights, optimizer state, inputs: untouched


def test_gradients_are_the_same_with_the_saved_tensors_moved(shape, small_floor):
    """The move there and back (the planner's emulation of it, through the checkpointed layers'
    saved inputs) gives exactly the gradients of the step without it."""
    grads, weights = {}, {}  # one cache: the same random base weights for both
    for moved in (False, True):
        w = workload("stage2", moved, micro_batch=1)
        st = prepare(build_llava(shape.llava_config(2), "4bit", CPU, weights), w)
        batch = to_device(make_batch(shape, 1, w.length), CPU, st.pixel_dtype)
        host = HostOffload()
        count = st.loss_fn.count(batch)
        accumulate(st.model, 0, [(0, batch)], [count], count, 1, st.loss_fn, w.optim, CPU, st.pixel_dtype,
                   autocast=autocast_policy("cpu"), saved=host.hooks if moved else None)
        grads[moved] = {n: p.grad.clone() for n, p in st.model.named_parameters() if p.grad is not None}
        if moved:
            assert host.peak > 0 and host.live == 0  # moved, then released after the backward
    assert grads[False].keys() == grads[True].keys() and grads[False]
    for n, g in grads[False].items():
        assert torch.equal(g, grads[True][n]), n


@pytest.mark.slow
def test_depth_fit_from_1_2_4_layers_predicts_8_layers_with_the_offload(shape, small_floor):
    w = workload("stage2", True, micro_batch=1)
    cache = {}
    runs = [measure(shape, w, n, 1, CPU, cache) for n in (1, 2, 4, 8)]
    fit = DepthFit(runs[:3])
    assert fit.predict(8).total == pytest.approx(runs[3].peak, rel=0.01)
    assert fit.residual() < 0.01
