"""`lora-vl compose`: write a standard Llava checkpoint composed from a chat LM + vision encoder.

`lora-vl adapt` does this itself when its recipe names `lm` and `vision`; this command is for
building (or inspecting) the base alone, e.g. to serve it or to share it between runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lora_vl.train.config import ModelConfig
from lora_vl.train.stage import ensure_base


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lora-vl compose", description=__doc__)
    ap.add_argument("--lm", required=True, help="causal LM hub id or local path")
    ap.add_argument("--vision", required=True, help="CLIP or SigLIP hub id or local path")
    ap.add_argument("--out", required=True, help="output folder of the Llava checkpoint")
    ap.add_argument("--lm-revision", default=None)
    ap.add_argument("--vision-revision", default=None)
    ap.add_argument("--chat-template", default="auto", help="auto (the LM's own), llama2, tulu2 or chatml")
    ap.add_argument("--vision-feature-layer", type=int, default=-2)
    ap.add_argument("--select-strategy", default="auto", choices=["auto", "default", "full"])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    a = ap.parse_args(argv)
    model = ModelConfig(lm=a.lm, vision=a.vision, lm_revision=a.lm_revision, vision_revision=a.vision_revision,
                        base_dir=a.out, chat_template=a.chat_template, vision_feature_layer=a.vision_feature_layer,
                        vision_feature_select_strategy=a.select_strategy, dtype=a.dtype)
    print(f"Llava base checkpoint at {ensure_base(model, Path(a.out).parent)}")
    return 0
