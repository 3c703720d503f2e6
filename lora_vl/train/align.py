"""`lora-vl align RECIPE [key=value ...]`: make the study's starting point, a safety-aligned chat LLM,
from a chat LM that is not one (e.g. SmolLM2-135M-Instruct complies with harmful asks).

Chat SFT of the causal LM (the assistant tokens of text chats under the LM's own chat template)
as a LoRA adapter, through the kit's one training loop; then the adapter is folded into the
LM's weights and the result saved as a plain causal-LM checkpoint (safetensors, tokenizer with
its chat template, manifest) that `lora-vl adapt` composes like any other chat LLM. The fold is
in float32 and saved in float32 by default: an alignment delta of a few hundred LoRA steps is
partly below bfloat16's resolution of the weights it is added to.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch
from peft import PeftModel

from lora_vl.data.dataset import TrainSet
from lora_vl.errors import InputError
from lora_vl.handoff import check_output, read_manifest
from lora_vl.models import lora as L
from lora_vl.models.load import load_causal_lm
from lora_vl.recipe import field
from lora_vl.train.config import LoraSettings, StageConfig
from lora_vl.train.loop import TokenLoss, train
from lora_vl.train.stage import (data_provenance, finished, local_stamp, run_record, stage_fingerprint, stage_main,
                                 write_result, write_stage_manifest)


@dataclass
class AlignRecipe:
    output_dir: str = field(help="run folder: lm/ (the aligned checkpoint), adapter/, checkpoints/, tb/")
    lm: str = field(help="the chat LM to align (causal LM dir or hub id); its own chat template formats the chats")
    sft: StageConfig = field(help="chat SFT data (text chats, e.g. llava_json without images) and optimisation")
    lora: LoraSettings = field(default_factory=LoraSettings, help="LoRA settings of the alignment adapter")
    quantization: Literal["4bit", "none"] = field(
        "none", help="none: LoRA over the LM's own weights, folded exactly; 4bit: QLoRA, whose adapter learned "
        "against the NF4 weights and so does less when folded into the float ones (measured: docs/tutorial.md)")
    save_dtype: Literal["float32", "bfloat16", "float16"] = field(
        "float32", help="dtype of the folded checkpoint (float32 keeps a small alignment delta exactly)")


def prepare(r: AlignRecipe):
    """(the LM with a fresh trainable LoRA on every linear but the output head, tokenizer)."""
    model, tokenizer = load_causal_lm(r.lm, quantization=r.quantization)
    if tokenizer.chat_template is None:
        raise InputError(f"{r.lm}: the tokenizer has no chat template; alignment formats chats with the "
                         "LM's own template (use a chat model, or add a template to tokenizer_config.json)")
    model = L.prepare_base(model, r.quantization == "4bit", gradient_checkpointing=False)
    # PEFT's "all-linear" leaves out the output head
    return L.add_lora(model, r.lora, train_projector=False, seed=r.sft.optim.seed, targets="all-linear"), tokenizer


def fold(lm: str, adapter: Path, dtype: str, out: Path) -> None:
    """Base LM + adapter folded into one checkpoint at `out` (PEFT's merge_and_unload, in float32)."""
    model, tokenizer = load_causal_lm(lm, quantization="none", device="cpu")
    model = PeftModel.from_pretrained(model.float(), str(adapter)).merge_and_unload()
    model.to(getattr(torch, dtype)).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def run_align(r: AlignRecipe) -> Path:
    check_output(r.output_dir, [("lm", r.lm)] + [(f"sft.data.sources[{i}].path", s.path)
                                                 for i, s in enumerate(r.sft.data.sources)], command="align")
    out = Path(r.output_dir)
    provenance = data_provenance(r.sft.data)
    fp = stage_fingerprint(r.lm, local_stamp(r.lm), r.quantization, r.lora, r.sft, provenance)
    adapter = out / "adapter"
    if not finished(adapter, fp):
        model, tokenizer = prepare(r)
        data = TrainSet(r.sft.data, SimpleNamespace(tokenizer=tokenizer))
        res = train(model, L.param_groups(model, r.sft.optim.lr, None), data, r.sft.optim,
                    ckpt_dir=out / "checkpoints", tb_dir=out / "tb", fingerprint=fp,
                    desc="alignment (chat SFT)", loss_fn=TokenLoss())
        record = run_record(res, data)

        def write_adapter(tmp: Path) -> None:
            model.save_pretrained(tmp)
            write_stage_manifest(tmp, "align_adapter", dataclasses.asdict(r), fingerprint=fp, base=r.lm,
                                 data=provenance, **record)
        write_result(adapter, write_adapter)
        del model
    lm_out = out / "lm"
    if not finished(lm_out, fp):
        def write_lm(tmp: Path) -> None:
            fold(r.lm, adapter, r.save_dtype, tmp)
            write_stage_manifest(tmp, "aligned_lm", dataclasses.asdict(r), fingerprint=fp, base=r.lm,
                                 adapter=str(adapter), dtype=r.save_dtype,
                                 source=read_manifest(r.lm, required=False))  # e.g. the GGUF's provenance
        write_result(lm_out, write_lm)
    return lm_out


def main(argv: list[str]) -> int:
    return stage_main(argv, prog="lora-vl align", doc=__doc__, recipe_cls=AlignRecipe, run=run_align,
                      example="recipes/real/align.yaml", override="sft.optim.max_steps=10",
                      done="aligned LM written to")
