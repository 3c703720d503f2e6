"""`lora-vl adapt RECIPE [key=value ...]`: VL adaptation of a chat LLM, the LLaVA-1.5 way, as QLoRA.

Stage 1 trains the projector alone on captions (LM and vision tower frozen). Stage 2 trains a
LoRA adapter on every linear layer of the language model plus the projector (its own
learning rate) on visual instructions. The result is a standard PEFT adapter directory
(LoRA + projector via modules_to_save) with a manifest.json, over a standard Llava base.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lora_vl.artifacts import atomic_dir
from lora_vl.data.check import CheckCache
from lora_vl.data.dataset import TrainSet
from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.recipe import RecipeError, field
from lora_vl.train.config import LoraSettings, ModelConfig, StageConfig
from lora_vl.train.loop import train
from lora_vl.train.prepare import BasePolicy, Prepared, lora_stage, projector_stage
from lora_vl.train.stage import (check_run_output, data_provenance, ensure_base, finished, local_stamp,
                                 run_record, stage_fingerprint, stage_main, write_result,
                                 write_stage_manifest)


@dataclass
class AdaptRecipe:
    output_dir: str = field(help="run folder: stage1/, adapter/, checkpoints/, tb/")
    model: ModelConfig = field(help="which LM + vision encoder (or Llava base) and how to load it")
    stage2: StageConfig = field(help="visual instruction tuning: LoRA + projector")
    lora: LoraSettings = field(default_factory=LoraSettings, help="LoRA settings of stage 2")
    stage1: StageConfig | None = field(None, help="projector pretraining on captions; omit to skip")
    projector: str | None = field(None, help="a pretrained projector.safetensors to start stage 2 from "
                                             "instead of stage 1")

    def validate(self, where: str) -> None:
        if self.stage1 is not None and self.projector is not None:
            raise RecipeError(f"{where}: give stage1 or projector, not both")


def stage1_setup(r: AdaptRecipe, base) -> tuple[Prepared, object]:
    """(stage 1 prepared for the loop, processor) on the checkpoint `base`."""
    model, processor = load_vlm(base, quantization=r.model.quantization)
    return projector_stage(model, BasePolicy.of(r.model), r.stage1.optim), processor


def stage2_setup(r: AdaptRecipe, base, projector: Path | None) -> tuple[Prepared, object]:
    """(stage 2 prepared for the loop, processor) on `base`, from a trained projector if given."""
    model, processor = load_vlm(base, quantization=r.model.quantization)
    if projector is not None:
        L.load_projector(model, projector)
    return lora_stage(model, BasePolicy.of(r.model), r.lora, r.stage2.optim), processor


def train_stage1(r: AdaptRecipe, base, out: Path) -> Path:
    provenance = data_provenance(r.stage1.data)  # hashes the data files: once, for fingerprint and manifest
    fp = stage_fingerprint(r.model, r.stage1, str(base), local_stamp(base), provenance)
    if finished(out, fp):
        print(f"stage 1 already complete: {out}")
        return out / "projector.safetensors"
    st, processor = stage1_setup(r, base)
    data = TrainSet(r.stage1.data, processor, cache=CheckCache(Path(r.output_dir) / "data-check/stage1", provenance))
    res = train(st.model, st.groups, data, r.stage1.optim, ckpt_dir=Path(r.output_dir) / "checkpoints/stage1",
                tb_dir=Path(r.output_dir) / "tb/stage1", fingerprint=fp, desc="stage 1 (projector)",
                loss_fn=st.loss_fn, pixel_dtype=st.pixel_dtype)
    record = run_record(res, data)

    def write(tmp: Path) -> None:
        L.save_projector(st.model, tmp / "projector.safetensors")
        write_stage_manifest(tmp, "projector", dataclasses.asdict(r), fingerprint=fp, base=str(base),
                             data=provenance, **record)
    return write_result(out, write) / "projector.safetensors"


def train_stage2(r: AdaptRecipe, base, projector: Path | None, out: Path) -> Path:
    provenance = data_provenance(r.stage2.data)
    fp = stage_fingerprint(r.model, r.lora, r.stage2, str(base), local_stamp(base), str(projector),
                           local_stamp(projector), provenance)
    if finished(out, fp):
        print(f"stage 2 already complete: {out}")
        return out
    st, processor = stage2_setup(r, base, projector)
    model = st.model
    data = TrainSet(r.stage2.data, processor, cache=CheckCache(Path(r.output_dir) / "data-check/stage2", provenance))

    def snapshot(step: int) -> None:  # the adapter as it is at `step` (rank 0): for curves over stage 2
        with atomic_dir(Path(r.output_dir) / "snapshots" / "stage2" / f"step-{step}", overwrite=True) as tmp:
            model.save_pretrained(tmp)
            write_stage_manifest(tmp, "vl_adapter_snapshot", dataclasses.asdict(r), fingerprint=fp,
                                 base=str(base), step=step, parents=[str(projector)] if projector else [])

    res = train(model, st.groups, data, r.stage2.optim, ckpt_dir=Path(r.output_dir) / "checkpoints/stage2",
                tb_dir=Path(r.output_dir) / "tb/stage2", fingerprint=fp, desc="stage 2 (LoRA + projector)",
                loss_fn=st.loss_fn, pixel_dtype=st.pixel_dtype, on_snapshot=snapshot)
    record = run_record(res, data)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp / "processor")
        write_stage_manifest(tmp, "vl_adapter", dataclasses.asdict(r), fingerprint=fp, base=str(base),
                             lm=r.model.lm, lm_revision=r.model.lm_revision, vision=r.model.vision,
                             vision_revision=r.model.vision_revision,
                             parents=[str(projector)] if projector else [], data=provenance, **record)
    return write_result(out, write)


def run_adapt(r: AdaptRecipe) -> Path:
    sections = {"stage2": r.stage2.data, **({"stage1": r.stage1.data} if r.stage1 else {})}
    check_run_output("adapt", r.output_dir, r.model, sections, [("projector", r.projector)])
    out = Path(r.output_dir)
    base = ensure_base(r.model, out)
    projector = Path(r.projector) if r.projector else None
    if r.stage1 is not None:
        projector = train_stage1(r, base, out / "stage1")
    return train_stage2(r, base, projector, out / "adapter")


def main(argv: list[str]) -> int:
    return stage_main(argv, prog="lora-vl adapt", doc=__doc__, recipe_cls=AdaptRecipe, run=run_adapt,
                      example="recipes/toy/adapt.yaml", override="stage2.optim.max_steps=10",
                      done="VL adapter written to")
