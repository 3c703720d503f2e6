"""One definition per training stage: how it prepares a loaded Llava (base preparation, LoRA or
stacked frozen adapters, which parameters train at which learning rate) and its loss.

`lora-vl adapt` / `safety` (and through them `lora-vl study`) call these on the checkpoint they
load; `lora-vl plan` calls them on a random-weight model of full width. The step that follows
is the loop's (`train/loop.py`: `accumulate`, `optimizer_step`) in both, so a prediction
measures the code that trains. Evaluation's preparation is `evaluation/model_io.py:prepare_eval`.

Safety stages stack the VL adapter FROZEN under a new trainable LoRA. Why stacked adapters and
not a VL adapter folded into the base: PEFT 0.21 keeps several LoRA adapters active at once and
sums their deltas, so the frozen VL adapter acts exactly as in its own run while the base stays
4-bit; folding it in would need a 16-bit copy of the LM. PEFT's `set_adapter` marks every active
adapter trainable, so `activate` re-freezes all but the safety adapter after each switch.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from lora_vl.handoff import lora_config
from lora_vl.models import lora as L
from lora_vl.train.config import ModelConfig
from lora_vl.train.dpo import DpoLoss
from lora_vl.train.loop import TokenLoss
from lora_vl.train.stage import pixel_dtype

SAFETY = "default"  # PEFT saves the adapter named "default" at the top of the output folder


@dataclass
class Prepared:
    """A stage ready for the loop: the model, its optimizer parameter groups (params and lr; the
    weight decay is the optimizer's) and its loss."""
    model: object
    groups: list[dict]
    loss_fn: object

    @property
    def trainable(self) -> list[torch.Tensor]:
        return [p for g in self.groups for p in g["params"]]

    @property
    def pixel_dtype(self) -> torch.dtype:
        return pixel_dtype(self.model)


@dataclass(frozen=True)
class BasePolicy:
    """How a stage treats its base and computes its loss: the recipe's `model:` keys that shape the
    step. Training makes it from the recipe (`of`), the planner from its workload, so a new memory
    option is one field here and one use in `prepare`.
    `loss_chunk`: `model.loss_chunk_tokens` (0: full logits); `frozen_dtype`: see `L.prepare_base`;
    `trained_dtype`: see `L.trained_dtype`; `offload`: `model.offload_checkpoints` (see `L.prepare_base`)."""
    quantized: bool
    checkpointing: bool
    loss_chunk: int = ModelConfig.loss_chunk_tokens  # the recipe's defaults: one definition (train/config.py)
    frozen_dtype: str = ModelConfig.frozen_dtype
    trained_dtype: str = ModelConfig.trained_dtype
    offload: bool = ModelConfig.offload_checkpoints

    @classmethod
    def of(cls, m) -> BasePolicy:
        """From a recipe's `model:` section (`ModelConfig`)."""
        return cls(m.quantization == "4bit", m.gradient_checkpointing, m.loss_chunk_tokens, m.frozen_dtype,
                   m.trained_dtype, m.offload_checkpoints)

    def prepare(self, model) -> tuple[object, torch.dtype]:
        """The prepared base, and the dtype what trains on it is kept in (read before preparing)."""
        trained = L.trained_dtype(model, self.trained_dtype)
        return L.prepare_base(model, self.quantized, self.checkpointing, self.frozen_dtype, self.offload), trained


def projector_stage(model, policy: BasePolicy, optim) -> Prepared:
    """Stage 1: the projector alone trains (fp32 master weights unless `trained_dtype`; autocast
    computes in bf16 on a GPU)."""
    model, trained = policy.prepare(model)
    proj = L.projector_module(model)
    proj.to(trained).requires_grad_(True)
    return Prepared(model, [{"params": list(proj.parameters()), "lr": optim.lr}], TokenLoss(policy.loss_chunk))


def lora_stage(model, policy: BasePolicy, lora, optim) -> Prepared:
    """Stage 2: a fresh LoRA on every LM linear plus the projector, at its own learning rate."""
    model, trained = policy.prepare(model)
    model = L.add_lora(model, lora, train_projector=True, seed=optim.seed)
    L.train_in(model, trained)
    return Prepared(model, L.param_groups(model, optim.lr, optim.lr_projector), TokenLoss(policy.loss_chunk))


def safety_stage(model, method: str, policy: BasePolicy, lora, optim, parents: list,
                 beta: float = 0.1, dpo_loss: str = "sigmoid", label_smoothing: float = 0.0) -> Prepared:
    """Safety SFT or DPO: `parents` (adapter dirs or `UnsavedAdapter`s, the VL adapter first)
    stacked frozen, a new safety LoRA trains on top. DPO's reference is the same network with the
    safety adapter switched off."""
    model, trained = policy.prepare(model)
    targets = L.lora_target_regex(model)  # before wrapping: the regex anchors on the base's module paths
    model = L.attach_adapters(model, parents, trainable=False)
    vl = list(model.peft_config)
    freeze_dropout(model, vl)
    torch.manual_seed(optim.seed)
    with L.quiet_peft():
        model.add_adapter(SAFETY, lora_config(lora, targets))
    activate(model, vl)
    if policy.frozen_dtype == "compute":  # the frozen adapters like the rest of the frozen base
        L.frozen_adapters_in(model, model.get_input_embeddings().weight.dtype)
    L.train_in(model, trained)
    chunk = policy.loss_chunk
    loss_fn = TokenLoss(chunk) if method == "sft" else DpoLoss(beta, dpo_loss, label_smoothing,
                                                               reference=lambda: vl_only(model, vl), chunk=chunk)
    return Prepared(model, L.param_groups(model, optim.lr, None), loss_fn)


def activate(model, vl: list[str]) -> None:
    """VL + safety adapters active; only the safety adapter trainable."""
    model.base_model.set_adapter(vl + [SAFETY])
    for name, p in model.named_parameters():
        if p.requires_grad and f".{SAFETY}." not in name:
            p.requires_grad_(False)


@contextlib.contextmanager
def vl_only(model, vl: list[str]):
    """The reference network: the VL-adapted model, the safety adapter switched off."""
    model.base_model.set_adapter(vl, inference_mode=True)
    try:
        yield model
    finally:
        activate(model, vl)


def freeze_dropout(model, names: list[str]) -> None:
    """A frozen adapter is a fixed function: no LoRA dropout on it while the model trains."""
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        for n in names:
            if drops is not None and n in drops:
                drops[n] = torch.nn.Identity()
