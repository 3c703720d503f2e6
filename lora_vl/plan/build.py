"""Random-weight models at full width, prepared exactly as each stage prepares them.

No checkpoint is written: the weights are drawn in memory and handed to
`from_pretrained(None, config=..., state_dict=...)`, so transformers' bitsandbytes integration
quantizes them into real `Linear4bit` layers the way it does when loading from disk, under the
kit's `bnb_config` (NF4, double quant, vision tower / projector / lm_head skipped). The compute
dtype is bf16 on every device, as on a GPU. Then the stage's own definition prepares it: the very
functions `lora-vl adapt` / `safety` / `eval` call (`train/prepare.py`, `evaluation/model_io.py`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import LlavaForConditionalGeneration
from transformers.utils import logging as hf_logging

from lora_vl.evaluation.model_io import prepare_eval
from lora_vl.models.load import NO_HUB_KERNELS, attn_implementation, bnb_config, set_cpu_4bit_repacking
from lora_vl.models.lora import UnsavedAdapter
from lora_vl.train import prepare as S
from lora_vl.train.config import ModelConfig

DTYPE = torch.bfloat16  # the compute dtype on a GPU (`compute_dtype` on bf16-capable cards)


def random_state(meta_model, cache: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """Random bf16 weights for every entry of the state dict. The decoder layers are copies of
    one random layer, so a deeper model costs no more random numbers; `cache` carries the
    random tensors across the builds of one plan. Copies, not shared tensors: a weight that
    is not quantized must own its memory, as it does when loaded from a checkpoint."""
    out = {}
    for name, t in meta_model.state_dict().items():
        if not t.is_floating_point():  # integer buffers keep the values the model makes
            continue
        role = (re.sub(r"\.layers\.\d+\.", ".layers.N.", name), tuple(t.shape))
        if role not in cache:
            if t.dim() == 1 and name.endswith("weight"):  # norm scales
                cache[role] = torch.ones(t.shape, dtype=DTYPE, device=device)
            else:
                cache[role] = torch.empty(t.shape, dtype=DTYPE, device=device).normal_(0.0, 0.02)
        out[name] = cache[role].clone()
    return out


def build_llava(config, quantization: str, device: torch.device, cache: dict):
    """A random-weight Llava under the kit's loading policy, in bf16."""
    with torch.device("meta"):
        meta_model = LlavaForConditionalGeneration(config)
    state = random_state(meta_model, cache, device)
    kwargs = dict(dtype=DTYPE, attn_implementation=attn_implementation(device), device_map={"": device},
                  **NO_HUB_KERNELS)
    if quantization == "4bit":
        kwargs["quantization_config"] = bnb_config(DTYPE)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no "loading weights" bars for weights that were never on disk
    hf_logging.disable_progress_bar()
    try:
        model = LlavaForConditionalGeneration.from_pretrained(None, config=config, state_dict=state, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if quantization == "4bit":
        set_cpu_4bit_repacking(model, False)
    return model


@dataclass
class Workload:
    """What the plan measures: one of the kit's stages, with its sizes."""
    kind: str  # "stage1", "stage2", "sft", "dpo", "eval"
    quantization: str
    gradient_checkpointing: bool
    lora: object | None  # LoraSettings of the trained adapter (None: stage 1, eval)
    frozen: list  # LoraSettings of frozen stacked adapters, VL adapter first (safety, eval)
    optim: object | None  # OptimConfig (training)
    micro_batch: int  # samples (DPO: pairs; eval: prompts) per forward
    length: int  # tokens per sample (eval: prompt tokens)
    new_tokens: int = 0  # eval: tokens generated per prompt
    beta: float = 0.1  # DPO
    dpo_loss: str = "sigmoid"
    # the recipe's model keys, defaulting as the recipe does (train/config.py)
    loss_chunk_tokens: int = ModelConfig.loss_chunk_tokens  # 0: full logits
    frozen_dtype: str = ModelConfig.frozen_dtype
    trained_dtype: str = ModelConfig.trained_dtype
    offload_checkpoints: bool = ModelConfig.offload_checkpoints

    @property
    def policy(self) -> S.BasePolicy:
        """The stage's base policy, as training makes it from the recipe's `model:` keys."""
        return S.BasePolicy(self.quantization == "4bit", self.gradient_checkpointing, self.loss_chunk_tokens,
                            self.frozen_dtype, self.trained_dtype, self.offload_checkpoints)

    @property
    def rows(self) -> int:
        """Sequences per forward: a DPO batch of B pairs is 2B rows (chosen, then rejected)."""
        return 2 * self.micro_batch if self.kind == "dpo" else self.micro_batch


def prepare(model, w: Workload):
    """The stage's own preparation (`train/prepare.py`, `evaluation/model_io.py`): a `Prepared`
    for a training stage, the model for evaluation. Frozen adapters have no file yet: stacked as
    `UnsavedAdapter`s of the recipe's settings, the VL adapter first with its projector copy."""
    frozen = [UnsavedAdapter(s, projector=i == 0) for i, s in enumerate(w.frozen)]
    if w.kind == "eval":
        return prepare_eval(model, frozen)
    policy = w.policy
    if w.kind == "stage1":
        return S.projector_stage(model, policy, w.optim)
    if w.kind == "stage2":
        return S.lora_stage(model, policy, w.lora, w.optim)
    return S.safety_stage(model, w.kind, policy, w.lora, w.optim, frozen, beta=w.beta, dpo_loss=w.dpo_loss)
