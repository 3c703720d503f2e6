"""`lora-vl eval SUITE --model BASE [--adapter DIR ...] [--out DIR] [key=value ...]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from lora_vl.evaluation.model_io import model_fingerprint
from lora_vl.evaluation.run import run_suite
from lora_vl.evaluation.suite import Suite
from lora_vl.recipe import describe, load_recipe


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lora-vl eval", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a model (+ stacked PEFT adapters) on a suite: safety (ASR), over-refusal "
                    "(refusal rate), helpfulness (accuracy), each with n, judge and a 95% CI.",
        epilog="suite keys (YAML, or key=value overrides such as generation.batch_size=16 "
               "benchmarks.0.limit=20):\n" + describe(Suite))
    p.add_argument("suite", help="suite YAML (eval/paper.yaml, eval/quick.yaml, eval/toy.yaml)")
    p.add_argument("--model", required=True, help="base model: Llava checkpoint or causal LM (dir or hub id)")
    p.add_argument("--adapter", action="append", default=[], help="PEFT adapter dir; repeat to stack")
    p.add_argument("--out", help="output folder (default outputs/eval/<suite>-<model fingerprint>)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("overrides", nargs="*", help="key=value suite overrides")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_intermixed_args(argv)
    suite = load_recipe(Suite, args.suite, args.overrides)
    fp = model_fingerprint(args.model, args.adapter, suite.generation.revision, suite.generation.quantization)
    out = Path(args.out or f"outputs/eval/{suite.name}-{fp[:8]}")
    results = run_suite(suite, args.model, args.adapter, out, device=args.device, suite_path=args.suite)
    if results is None:  # not rank 0 of a multi-process run
        return 0
    for cat, s in results["summary"].items():
        print(f"{cat:>15}: {s['metric']} {s['value']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}] "
              f"n={s['n']} skipped={s.get('skipped', 0)} judge={','.join(s['judges'])}")
    failed = [b for b in results["benchmarks"] if b["status"] == "failed"]
    for b in failed:
        print(f"FAILED {b['failure']}")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 1 if failed else 0
