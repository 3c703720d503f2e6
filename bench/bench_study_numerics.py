"""The toy study under a GPU's numerics, on the CPU: the parity gate of issue 17's memory options.

On a CPU the kit computes in fp32, where `model.frozen_dtype: compute` is the same run as `float32`,
so `make study` there cannot tell the options apart. This runs `lora-vl study` with the CPU doing
what a bf16 GPU does in the kit, and each stage recipe of the study given the same `model.*` keys:

- models load in bf16, 4-bit ones with bf16 compute (`models/load.py:compute_dtype` answers bf16);
- training autocasts with the kit's CUDA policy (`train/loop.py:autocast_policy`), realised on the
  CPU (for the toy's training steps CPU autocast casts exactly the ops CUDA's does: the planner's
  tracker reports no op that CUDA autocast would run in fp32 meeting bf16 here);
- the heavy operators (matmuls, attention, 4-bit GEMM) run in fp32 and round their results to bf16
  (`plan/cpu_bf16.py:Fp32Compute`), as a GPU's bf16 kernels accumulate in fp32; this CPU's own
  software bf16 is ~10x slower than that and rounds differently.

    python bench/bench_study_numerics.py OUT_A                                   # today's defaults
    python bench/bench_study_numerics.py OUT_B model.frozen_dtype=compute model.loss_chunk_tokens=1024
    python bench/bench_study_numerics.py --compare OUT_A OUT_B                    # verdicts, side by side

Needs the toy world (`make world`). Each study takes ~2.5x `make study`'s time (the dispatch mode's
per-operator cost); `--threads 1` lets two arms share a 2-core machine. `--numerics cpu` runs the
same arm without the emulation (the CPU's own fp32 run).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
import yaml

from lora_vl.recipe import read_yaml

STAGES = ("adapt", "adapt_mixed", "safety_sft", "safety_dpo")  # the study's stage recipes (all have `model:`)


@contextlib.contextmanager
def gpu_numerics():
    """The kit's two device decisions answered as on a bf16 GPU, and bf16 heavy operators computed
    as a GPU computes them; both restored on exit."""
    import lora_vl.models.load as load
    import lora_vl.train.loop as loop
    from lora_vl.plan.cpu_bf16 import Fp32Compute

    dtype_of, autocast_of = load.compute_dtype, loop.autocast_policy
    load.compute_dtype = lambda device: torch.bfloat16
    loop.autocast_policy = lambda device_type, run_on=None: autocast_of("cuda", run_on=run_on or device_type)
    try:
        with Fp32Compute():
            yield
    finally:
        load.compute_dtype, loop.autocast_policy = dtype_of, autocast_of


def arm_recipes(study: str, out: Path, model_keys: list[str]) -> Path:
    """A copy of the study recipe writing to `out`, whose stage recipes carry `model_keys`."""
    keys = {}
    for kv in model_keys:
        key, sep, value = kv.partition("=")
        if not sep or not key.startswith("model."):
            raise SystemExit(f"{kv!r}: expected model.KEY=VALUE (a key of the stage recipes' model section)")
        keys[key.removeprefix("model.")] = yaml.safe_load(value)
    doc = read_yaml(study)
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        stage_doc = read_yaml(doc[stage])
        stage_doc["model"] = {**stage_doc["model"], **keys}
        path = out / "recipes" / Path(doc[stage]).name
        path.write_text(yaml.safe_dump(stage_doc, sort_keys=False))
        doc[stage] = str(path)
    doc["output_dir"] = str(out)
    path = out / "recipes" / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def verdicts(out: Path) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in json.loads((out / "claims.json").read_text())["claims"]}


def compare(a: Path, b: Path) -> int:
    va, vb = verdicts(a), verdicts(b)
    print(f"{'claim':>16}  {a.name:<20}  {b.name:<20}")
    for cid in sorted(va.keys() | vb.keys()):
        mark = "" if va.get(cid) == vb.get(cid) else "   <- differs"
        print(f"{cid:>16}  {va.get(cid, '-'):<20}  {vb.get(cid, '-'):<20}{mark}")
    same = va == vb
    print("same verdict for every claim" if same else "verdicts differ")
    return 0 if same else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="+", help="the arm's study folder (then its model.KEY=VALUE keys); "
                    "with --compare, two finished study folders")
    ap.add_argument("--study", default="recipes/toy/study.yaml")
    ap.add_argument("--numerics", choices=["gpu", "cpu"], default="gpu",
                    help="gpu: bf16 emulated as above (default); cpu: the CPU's own fp32 run")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", action="store_true")
    args = ap.parse_intermixed_args()
    if args.compare:
        return compare(*map(Path, args.out[:2]))
    from lora_vl.study import run as study

    out, keys = Path(args.out[0]), args.out[1:]
    recipe = arm_recipes(args.study, out, keys)
    argv = [str(recipe), "--seeds", *map(str, args.seeds), "--threads", str(args.threads)]
    (out / "arm.json").write_text(json.dumps({"numerics": args.numerics, "model_keys": keys, "study": args.study,
                                              "argv": sys.argv}, indent=2))
    with gpu_numerics() if args.numerics == "gpu" else contextlib.nullcontext():
        return study.main(argv)


if __name__ == "__main__":
    sys.exit(main())
