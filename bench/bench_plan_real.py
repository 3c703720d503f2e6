"""The memory planner checked on a real pretrained LM at full depth, on the CPU: for stage 2,
safety SFT, DPO and generation, the peak of live tensor bytes predicted from 1/2/4 decoder layers
vs measured by running the real step at the model's 30 layers (`lora-vl plan ... --measure
--measure-device cpu`; the bytes a step keeps alive do not depend on the device).

  python bench/bench_plan_real.py --lm outputs/real/lm --vision outputs/toy/world/models/vision
  python bench/bench_plan_real.py ... --micro-batch 2 --length 128     # smaller and quicker

Prints one markdown row per workload (predicted, measured, error, times). Goal: |error| ≤ 3%.
"""
from __future__ import annotations

import argparse
import sys

from bench_plan import GIB, run_plan  # same folder: the plan runs in a child process, timed

# workload: (recipe, plan arguments, recipe overrides of micro-batch {mb} and length {length})
WORKLOADS = {
    "stage 2": ("recipes/real/adapt.yaml", "--stage 2",
                "stage2.optim.micro_batch_size={mb} stage2.optim.global_batch_size={mb} "
                "stage2.data.max_length={length}"),
    "safety SFT": ("recipes/real/safety_sft.yaml", "",
                   "sft.optim.micro_batch_size={mb} sft.optim.global_batch_size={mb} sft.data.max_length={length}"),
    "DPO": ("recipes/real/safety_dpo.yaml", "",
            "dpo.optim.micro_batch_size={mb} dpo.optim.global_batch_size={mb} dpo.data.max_length={length}"),
    "generation": ("eval/toy.yaml", "--batch {mb} --prompt-length {length} --new-tokens 32", ""),
}


def row(name: str, r: dict) -> str:
    p = r["plan"]
    w, pred, meas = p["workload"], p["prediction"]["allocator_bytes"], p["measure"]["tracked_allocator_bytes"]
    size = f"{w['micro_batch']}{' pairs' if w['kind'] == 'dpo' else ''} × {w['length']}" \
        + (f" (+{w['new_tokens']} new)" if w["kind"] == "eval" else "")
    layers = "/".join(str(m["layers"]) for m in p["measured"])
    return (f"| {name} | {size} | {layers} | {pred / GIB:.3f} GiB | {meas / GIB:.3f} GiB | {pred / meas - 1:+.2%} | "
            f"{r['wall_s']:.0f} s |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm", default="outputs/real/lm", help="the converted real LM (`make real-lm`)")
    ap.add_argument("--vision", default="outputs/toy/world/models/vision", help="CLIP tower (`make world`)")
    ap.add_argument("--micro-batch", type=int, default=4, help="micro-batch (pairs for DPO, prompts for generation)")
    ap.add_argument("--length", type=int, default=256, help="tokens per sample / prompt, image included")
    ap.add_argument("--layers", default="1,2,4", help="decoder-layer counts the prediction is fitted on")
    ap.add_argument("--only", action="append", choices=sorted(WORKLOADS), help="run only these workloads")
    a = ap.parse_args()
    print("| work | micro-batch × length | fitted on layers | predicted peak "
          "| measured at 30 layers (CPU) | error | wall |")
    print("|---|---|---|---|---|---|---|")
    for name, (recipe, args, over) in WORKLOADS.items():
        if a.only and name not in a.only:
            continue
        fill = {"mb": a.micro_batch, "length": a.length}
        plan_args = (f"{args.format(**fill)} {over.format(**fill)} --lm {a.lm} --vision {a.vision} "
                     f"--layers {a.layers} --measure --measure-device cpu")
        print(row(name, run_plan(recipe, plan_args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
