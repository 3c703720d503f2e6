"""`model.offload_checkpoints` (issue 17): what autograd saves outside the checkpointed layers — the
layer inputs that gradient checkpointing keeps (non-reentrant checkpointing saves them through the
saved-tensor hooks active outside the layer), the LM head's input, the loss's logits — held in
pinned host memory from the forward to the backward instead of on the GPU.

torch's `save_on_cpu` would also copy the weights autograd saves (the 16-bit lm_head for its
input's gradient: 0.5 GB a step on a 7B), so these hooks move only large non-parameter tensors.
The copies run on the compute stream, non-blocking for the host (ordered with the kernels, not
overlapped with them: a side stream needs a GPU to test). On a CPU nothing moves: the tensors are
in host memory already; the planner accounts for the move instead (`lora_vl/plan/step.py`).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

MIN_BYTES = 1 << 20  # smaller saved tensors stay: a copy there and back costs more than they hold


def moves(t: torch.Tensor) -> bool:
    """Whether a saved tensor goes to host memory: large and not a weight."""
    return not isinstance(t, nn.Parameter) and t.numel() * t.element_size() >= MIN_BYTES


def _pack(t: torch.Tensor):
    if t.device.type != "cuda" or not moves(t):
        return t
    host = torch.empty(t.size(), dtype=t.dtype, layout=t.layout, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return t.device, host


def _unpack(packed):
    if isinstance(packed, torch.Tensor):
        return packed
    device, host = packed
    return host.to(device, non_blocking=True)


def saved_tensors(offload: bool, device: torch.device):
    """The context a training forward runs in: offloading hooks on a GPU when asked, else none."""
    if offload and device.type == "cuda":
        return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
    return contextlib.nullcontext()
