"""No model the kit loads asks the hub for layer kernels.

transformers 5.25 defaults `from_pretrained(use_kernels=...)` to True; on a GPU it then resolves
layer kernels (code) on the hub at load time (on a lent H200 without network every 4-bit load
failed there). Each loading path of the kit is run here for real,
with transformers' own `set_use_kernels` observed (and still called), and must say False."""
from __future__ import annotations

import pytest
import torch
from transformers.modeling_utils import PreTrainedModel

from lora_vl.merge.export import load_base
from lora_vl.models.compose import ComposeSpec, compose
from lora_vl.models.load import load_vlm
from lora_vl.plan.build import build_llava
from lora_vl.plan.shapes import base_shape
from lora_vl.toy.lm import _load as load_toy_lm


@pytest.fixture
def kernel_requests(monkeypatch):
    """The `use_kernels` value of every `set_use_kernels` call that from_pretrained makes."""
    seen = []
    real = PreTrainedModel.set_use_kernels

    def observed(self, use_kernels, *args, **kwargs):
        seen.append((type(self).__name__, bool(use_kernels)))
        return real(self, use_kernels, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "set_use_kernels", observed)
    return seen


def test_transformers_asks_for_hub_kernels_unless_told_not_to(tiny_parts, kernel_requests):
    """The reason for the policy: without it this transformers would request them."""
    from transformers import AutoModelForCausalLM

    lm = next(iter(tiny_parts.values()))["lm"]
    AutoModelForCausalLM.from_pretrained(lm)
    assert kernel_requests and kernel_requests[-1][1] is True


def test_every_loading_path_declines_hub_kernels(tiny_parts, tiny_bases, kernel_requests):
    (arch, vision), parts = next(iter(tiny_parts.items()))
    base = tiny_bases[(arch, vision)]
    compose(ComposeSpec(lm=str(parts["lm"]), vision=str(parts["vision"]), dtype="float32"))  # LM + vision tower
    assert len(kernel_requests) == 2
    for quantization in ("none", "4bit"):
        load_vlm(str(base), quantization=quantization, device="cpu")  # training and evaluation
    assert len(kernel_requests) == 4
    load_base(str(base))  # export
    load_toy_lm(parts["lm"])  # the toy world's LM
    shape = base_shape(str(base))
    build_llava(shape.llava_config(1), "4bit", torch.device("cpu"), {})  # the planner
    assert len(kernel_requests) == 7
    assert [name for name, wants in kernel_requests if wants] == []
