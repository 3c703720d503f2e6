"""`lora-vl safety RECIPE [key=value ...]`: a safety LoRA adapter on top of a VL adapter.

The base is loaded (4-bit for QLoRA), the VL adapter is stacked on it FROZEN, and a new LoRA
adapter on the same language-model linears trains on top, by SFT (VLGuard-style data, with
replayed instruction data mixed in) or by DPO (SPA-VL / PKU-SafeRLHF pairs; the reference is
the same network with the safety adapter switched off, i.e. the VL-adapted model). The
projector stays the VL adapter's, frozen, so the result is a pure LoRA adapter that the merge
stage can add to or subtract from the VL adapter. How the model is stacked and what trains:
`train/prepare.py:safety_stage` (why stacked adapters and not a folded base: there too).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lora_vl.artifacts import fingerprint_files
from lora_vl.data.check import CheckCache
from lora_vl.data.dataset import TrainSet
from lora_vl.handoff import open_adapter
from lora_vl.data.config import DataConfig
from lora_vl.models.load import load_vlm
from lora_vl.recipe import POSITIVE, Range, RecipeError, field
from lora_vl.train.config import LoraSettings, ModelConfig, OptimConfig, StageConfig
from lora_vl.train.loop import train
from lora_vl.train.preference import PairSet
from lora_vl.train.prepare import SAFETY, BasePolicy, Prepared, safety_stage
from lora_vl.train.stage import (check_run_output, data_provenance, ensure_base, finished, local_stamp,
                                 run_record, stage_fingerprint, stage_main, write_result,
                                 write_stage_manifest)


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


def build_training(r: SafetyRecipe, base, parent: Path, cache: CheckCache | None = None
                   ) -> tuple[Prepared, object, object]:
    """(the recipe's method prepared for the loop on `base` + frozen `parent`, processor, data set);
    `cache`: the data check's verdicts, as in `lora-vl adapt`."""
    stage = getattr(r, r.method)
    model, processor = load_vlm(base, quantization=r.model.quantization)
    dpo = ({"beta": stage.beta, "dpo_loss": stage.loss, "label_smoothing": stage.label_smoothing}
           if r.method == "dpo" else {})
    st = safety_stage(model, r.method, BasePolicy.of(r.model), r.lora, stage.optim, [str(parent)], **dpo)
    return st, processor, (TrainSet if r.method == "sft" else PairSet)(stage.data, processor, cache=cache)


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
    st, processor, data = build_training(r, base, parent,
                                         CheckCache(out / "data-check" / r.method, provenance))
    model = st.model
    res = train(model, st.groups, data, stage.optim,
                ckpt_dir=out / "checkpoints" / r.method, tb_dir=out / "tb" / r.method, fingerprint=fp,
                desc=f"safety {r.method} (LoRA on frozen VL adapter)", loss_fn=st.loss_fn,
                pixel_dtype=st.pixel_dtype)
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
