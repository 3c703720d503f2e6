"""`lora-vl safety RECIPE [key=value ...]`: a safety LoRA adapter on top of a VL adapter.

The base is loaded (4-bit for QLoRA), the VL adapter is stacked on it FROZEN, and a new LoRA
adapter on the same language-model linears trains on top, by SFT (VLGuard-style data, with
replayed instruction data mixed in) or by DPO (SPA-VL / PKU-SafeRLHF pairs; the reference is
the same network with the safety adapter switched off, i.e. the VL-adapted model). The
projector stays the VL adapter's, frozen, so the result is a pure LoRA adapter that the merge
stage can add to or subtract from the VL adapter.

Why stacked adapters and not a VL adapter folded into the base: PEFT 0.21 keeps several LoRA
adapters active at once and sums their deltas, so the frozen VL adapter acts exactly as in
its own run while the base stays 4-bit; folding it in would need a 16-bit copy of the LM.
PEFT's `set_adapter` marks every active adapter trainable, so `activate` re-freezes all but
the safety adapter after each switch.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lora_vl.artifacts import fingerprint_files
from lora_vl.data.dataset import TrainSet
from lora_vl.handoff import lora_config, open_adapter
from lora_vl.data.config import DataConfig
from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.models.lora import attach_adapters
from lora_vl.recipe import POSITIVE, Range, RecipeError, field
from lora_vl.train.config import LoraSettings, ModelConfig, OptimConfig, StageConfig
from lora_vl.train.loop import TokenLoss, train
from lora_vl.train.dpo import DpoLoss
from lora_vl.train.preference import PairSet
from lora_vl.train.stage import (check_run_output, data_provenance, ensure_base, finished, local_stamp,
                                 pixel_dtype, run_record, stage_fingerprint, stage_main, write_result,
                                 write_stage_manifest)

SAFETY = "default"  # PEFT saves the adapter named "default" at the top of the output folder


@dataclass
class DpoConfig:
    data: DataConfig = field(help="preference pairs: sources of format spa_vl / pku_saferlhf")
    optim: OptimConfig = field(default_factory=OptimConfig, help="optimisation of the DPO stage")
    beta: float = field(0.1, help="DPO temperature β: how far the policy may move from the reference",
                        range=POSITIVE)
    loss: Literal["sigmoid", "ipo"] = field("sigmoid", help="sigmoid = DPO; ipo = identity preference optimisation")
    label_smoothing: float = field(0.0, help="conservative DPO ε (sigmoid loss only)",
                                   range=Range(0, 0.5, high_open=True))

    def validate(self, where: str) -> None:
        if self.data.chat_format != "model":
            raise RecipeError(f"{where}.data.chat_format: DPO pairs are chat turns; expected 'model', "
                              f"got {self.data.chat_format!r}")


@dataclass
class SafetyRecipe:
    output_dir: str = field(help="run folder: adapter/, checkpoints/, tb/")
    model: ModelConfig = field(help="the Llava base the parent VL adapter was trained on, and how to load it")
    parent: str = field(help="the VL adapter directory (from `lora-vl adapt`) to train on top of, frozen")
    method: Literal["sft", "dpo"] = field(help="sft: safety SFT (VLGuard-style); dpo: DPO on preference pairs")
    lora: LoraSettings = field(default_factory=LoraSettings, help="LoRA settings of the safety adapter")
    sft: StageConfig | None = field(None, help="safety SFT data (vlguard, llava_json replay, ...) and optimisation")
    dpo: DpoConfig | None = field(None, help="DPO data, optimisation, β and loss")

    def validate(self, where: str) -> None:
        if getattr(self, self.method) is None:
            raise RecipeError(f"{where}.{self.method}: method is {self.method!r} but this section is missing")


def check_parent(parent: str | Path, base) -> Path:
    """The parent must be a readable PEFT adapter trained on this very base."""
    adapter = open_adapter(parent, role="parent adapter")
    adapter.check_base(base, role="parent adapter")
    return adapter.path


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


def stacked_model(r: SafetyRecipe, base, parent: Path, seed: int):
    """(PEFT model with frozen VL + trainable safety LoRA, processor, VL adapter names)."""
    model, processor = load_vlm(base, quantization=r.model.quantization)
    model = L.prepare_base(model, r.model.quantization == "4bit", r.model.gradient_checkpointing)
    targets = L.lora_target_regex(model)  # before wrapping: the regex anchors on the base's module paths
    model = attach_adapters(model, [str(parent)], trainable=False)
    vl = list(model.peft_config)
    freeze_dropout(model, vl)
    torch.manual_seed(seed)
    with L.quiet_peft():
        model.add_adapter(SAFETY, lora_config(r.lora, targets))
    activate(model, vl)
    return model, processor, vl



def build_training(r: SafetyRecipe, base, parent: Path):
    """(stacked model, processor, data set, loss_fn) for the recipe's method."""
    stage = getattr(r, r.method)
    model, processor, vl = stacked_model(r, base, parent, stage.optim.seed)
    if r.method == "sft":
        return model, processor, TrainSet(stage.data, processor), TokenLoss()
    loss_fn = DpoLoss(stage.beta, stage.loss, stage.label_smoothing, reference=lambda: vl_only(model, vl))
    return model, processor, PairSet(stage.data, processor), loss_fn


def run_safety(r: SafetyRecipe) -> Path:
    check_run_output("safety", r.output_dir, r.model, {r.method: getattr(r, r.method).data},
                     [("parent adapter", r.parent)])
    out = Path(r.output_dir)
    base = ensure_base(r.model, out)
    parent = check_parent(r.parent, base)
    stage = getattr(r, r.method)
    provenance = data_provenance(stage.data)  # hashes the data files: once, for fingerprint and manifest
    fp = stage_fingerprint(r.model, r.lora, stage, r.method, str(base), local_stamp(base), str(parent),
                           fingerprint_files([parent / "adapter_model.safetensors"]), provenance)
    if finished(out / "adapter", fp):
        print(f"safety adapter already complete: {out / 'adapter'}")
        return out / "adapter"
    model, processor, data, loss_fn = build_training(r, base, parent)
    res = train(model, L.param_groups(model, stage.optim.lr, None), data, stage.optim,
                ckpt_dir=out / "checkpoints" / r.method, tb_dir=out / "tb" / r.method, fingerprint=fp,
                desc=f"safety {r.method} (LoRA on frozen VL adapter)", loss_fn=loss_fn,
                pixel_dtype=pixel_dtype(model))
    record = run_record(res, data)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, selected_adapters=[SAFETY])
        processor.save_pretrained(tmp / "processor")
        write_stage_manifest(tmp, "safety_adapter", dataclasses.asdict(r), fingerprint=fp, base=str(base),
                             method=r.method, parents=[str(parent)], data=provenance, **record)
    return write_result(out / "adapter", write)


def main(argv: list[str]) -> int:
    return stage_main(argv, prog="lora-vl safety", doc=__doc__, recipe_cls=SafetyRecipe, run=run_safety,
                      example="recipes/toy/safety_sft.yaml", override="sft.optim.max_steps=10",
                      done="safety adapter written to")
