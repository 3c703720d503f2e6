"""`lora-vl toy`: build the offline toy world (synthetic language, pretrained + aligned Llama-class
chat LM, trained CLIP vision tower, LLaVA / safety data, held-out benchmarks, judge knowledge).

Built once and cached per (scale, seed); `--force` rebuilds. `--scale test` builds the same
files with tiny models in seconds (the test suite uses it).
"""
from __future__ import annotations

import argparse

import torch

from lora_vl.toy.build import build_world
from lora_vl.toy.scale import SCALES


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lora-vl toy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/toy/world", help="where to build the world (default: %(default)s)")
    ap.add_argument("--scale", default="full", choices=sorted(SCALES), help="full: the study's world; test: seconds")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, data and training (default: 0)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for training (default: 2)")
    ap.add_argument("--force", action="store_true", help="rebuild even if a world with these settings exists")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = build_world(a.out, a.scale, a.seed, a.force)
    print(f"toy world ready at {out}")
    return 0
