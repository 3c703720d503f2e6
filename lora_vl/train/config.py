"""Recipe schema shared by the training stages (adapt, safety)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lora_vl.data.config import DataConfig
from lora_vl.models.templates import TEMPLATES
from lora_vl.recipe import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, RecipeError, field


# Runs made before 2026-12-04 computed at the old defaults of two model keys (train/stage.py keeps them
# out of those runs' fingerprints); said where a run is not recognised as the recipe's.
DEFAULTS_CHANGED = ("model.frozen_dtype and model.loss_chunk_tokens default to compute and 1024 since 2026-12-04; "
                    "a run made before computed with float32 and 0: set those two keys to reuse or resume it")


@dataclass
class ModelConfig:
    lm: str | None = field(None, help="causal LM hub id or local path (composed with `vision`)")
    vision: str | None = field(None, help="CLIP or SigLIP hub id or local path")
    lm_revision: str | None = field(None, help="hub revision of the LM to pin (default: lora-vl.lock)",
                                    pins=("model", "lm"))
    vision_revision: str | None = field(None, help="hub revision of the vision encoder to pin (default: lora-vl.lock)",
                                        pins=("model", "vision"))
    base: str | None = field(None, help="an existing Llava checkpoint to start from instead of composing lm + vision")
    base_dir: str | None = field(None, help="where the composed Llava checkpoint is written (default: OUTPUT_DIR/base)")
    chat_template: str = field("auto", help="auto (the LM's own) or one of " + ", ".join(sorted(TEMPLATES)))
    vision_feature_layer: int = field(-2, help="vision layer whose hidden states feed the projector (LLaVA-1.5: -2)")
    vision_feature_select_strategy: Literal["auto", "default", "full"] = field(
        "auto", help="default drops CLIP's CLS token (LLaVA-1.5); full keeps all; auto picks per encoder")
    dtype: Literal["bfloat16", "float16", "float32"] = field("bfloat16", help="dtype of the composed checkpoint")
    quantization: Literal["4bit", "none"] = field("4bit", help="4bit = QLoRA (NF4, double quant); none = 16-bit LoRA")
    gradient_checkpointing: bool = field(True, help="recompute activations in backward to save memory")
    loss_chunk_tokens: int = field(
        1024, help="compute the loss (token loss and DPO) on the labelled tokens only, this many at a time "
        "(lm_head + cross-entropy per chunk, recomputed in backward), so no full-vocabulary logits tensor "
        "exists (default 1024: a Llama-2 chunk holds 375 MiB of logits whatever the micro-batch). 0 = off: the "
        "model's own loss over the full logits. Parity: docs/benchmarks.md, \"The toy study under a GPU's numerics\"",
        range=NON_NEGATIVE)
    frozen_dtype: Literal["float32", "compute"] = field(
        "compute", help="dtype of the frozen weights that are not 4-bit (vision tower, embeddings, norms, "
        "lm_head, a frozen projector copy, a safety stage's frozen VL adapter) under 4-bit training: compute "
        "(default) = kept in the compute dtype (bf16 on a GPU): half their bytes, and the LM's residual stream "
        "and checkpoints in bf16 too; float32 = PEFT's k-bit preparation (the default before 2026-12-04). "
        "What trains stays fp32 either way; on a CPU the compute dtype is fp32, so the two are the same")
    trained_dtype: Literal["float32", "compute"] = field(
        "float32", help="dtype of what trains (LoRA factors, a trained projector) and so of its gradients and "
        "Adam states: float32 = fp32 master weights (default: in bf16 an update smaller than 2^-8 of its weight "
        "rounds away, and micro-batch gradients accumulate in bf16); compute = the model's compute dtype (bf16 "
        "on a GPU): half those bytes (a 7B LoRA at r 128: ~1.2 GiB less with 8-bit Adam, ~2.4 GiB with fp32 "
        "Adam). fp16 models are refused; on a "
        "CPU the two are the same")
    offload_checkpoints: bool = field(
        False, help="keep the activation checkpoints (each checkpointed layer's input) in pinned host memory "
        "instead of on the GPU, copied back in the backward (transformers' checkpointing offload): most of the "
        "activations line of `lora-vl plan` moves to host memory, for two copies over PCIe per step. Needs "
        "gradient_checkpointing. On a CPU nothing moves (the planner still accounts for it)")

    def validate(self, where: str) -> None:
        if self.base is None and (self.lm is None or self.vision is None):
            raise RecipeError(f"{where}: give either 'base' (a Llava checkpoint) or both 'lm' and 'vision'")
        if self.offload_checkpoints and not self.gradient_checkpointing:
            raise RecipeError(f"{where}: offload_checkpoints offloads the activation checkpoints: it needs "
                              "gradient_checkpointing: true")


@dataclass
class LoraSettings:
    r: int = field(128, help="LoRA rank (LLaVA-1.5 LoRA: 128)", range=AT_LEAST_ONE)
    alpha: int = field(256, help="LoRA alpha (LLaVA-1.5 LoRA: 256)", range=POSITIVE)
    dropout: float = field(0.05, help="LoRA dropout", range=FRACTION)
    rslora: bool = field(False, help="rank-stabilised scaling alpha/sqrt(r) instead of alpha/r")


@dataclass
class OptimConfig:
    lr: float = field(2e-4, help="learning rate of the trained weights (LoRA, or the projector in stage 1)",
                     range=POSITIVE)
    lr_projector: float | None = field(None, help="learning rate of the projector in LoRA stages "
                                                  "(LLaVA-1.5 LoRA: 2e-5)",
                                       range=POSITIVE)
    weight_decay: float = field(0.0, help="AdamW weight decay", range=NON_NEGATIVE)
    warmup_ratio: float = field(0.03, help="fraction of steps for linear warm-up", range=FRACTION)
    scheduler: Literal["cosine", "linear", "constant_with_warmup"] = field("cosine", help="LR schedule")
    epochs: float = field(1.0, help="passes over the data", range=POSITIVE)
    max_steps: int | None = field(None, help="stop after this many optimizer steps (overrides epochs; null: by epochs)",
                                   range=AT_LEAST_ONE)
    micro_batch_size: int = field(1, help="samples per forward pass", range=AT_LEAST_ONE)
    global_batch_size: int = field(128, help="samples per optimizer step, over all processes (reached by "
                                   "gradient accumulation; with N processes each accumulates 1/N of it); "
                                   "a multiple of micro_batch_size",
                                   range=AT_LEAST_ONE)
    grad_clip: float = field(1.0, help="max gradient norm (0 = off)", range=NON_NEGATIVE)
    loss_average: Literal["token", "micro_batch"] = field(
        "token", help="token: a step's loss is the mean over all its labelled tokens (HF Trainer); "
        "micro_batch: the mean of per-micro-batch means (weights short and long micro-batches alike)")
    optimizer: Literal["adamw", "paged_adamw_8bit"] = field("adamw",
                                                            help="paged_adamw_8bit (bitsandbytes) saves GPU memory")
    group_by_length: bool = field(True, help="batch samples of similar length together")
    save_every: int = field(50, help="checkpoint every N optimizer steps (resumable)",
                          range=AT_LEAST_ONE)
    keep_checkpoints: int = field(2, help="how many recent checkpoints to keep", range=AT_LEAST_ONE)
    snapshot_every: int | None = field(None, help="also write a loadable adapter every N optimizer steps "
                                       "(OUTPUT_DIR/snapshots/<stage>/step-N): curves over training",
                                       range=AT_LEAST_ONE)
    seed: int = field(0, help="seed for init, dropout and batch order")

    def validate(self, where: str) -> None:
        if self.global_batch_size % self.micro_batch_size:
            raise RecipeError(f"{where}.global_batch_size ({self.global_batch_size}) must be a multiple of "
                              f"micro_batch_size ({self.micro_batch_size})")


@dataclass
class StageConfig:
    data: DataConfig = field(help="data mixture of this stage")
    optim: OptimConfig = field(default_factory=OptimConfig, help="optimisation of this stage")
