"""`lora-vl merge RECIPE [key=value ...] [--sweep KEY=V1,V2 ...]` and `lora-vl merge export ...`."""
from __future__ import annotations

import argparse

from lora_vl.merge.export import main as export_main
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.merge.run import run
from lora_vl.merge.sweep import load_sweep_data, run_sweep
from lora_vl.recipe import build, describe

EXAMPLES = """\
examples:
  lora-vl merge recipes/merge/toy.yaml
  lora-vl merge recipes/merge/toy.yaml inputs.1.weight=0.5 output=outputs/toy/merge/half
  lora-vl merge recipes/merge/toy.yaml method=ties density=0.3 rank=8
  lora-vl merge recipes/merge/toy.yaml output=outputs/toy/merge/sweep --sweep 'inputs.1.weight=0,0.25,0.5,1.0'
  lora-vl merge export --adapter outputs/toy/merge/vl_plus_safety --base outputs/toy/base --output outputs/toy/export
  (lora-vl merge export --help for exporting a full checkpoint)

--sweep KEY=V1,V2,... (repeatable; or KEY=[V1, V2] with YAML values, e.g. 'weights=[[1,0],[1,1]]')
makes the grid (cartesian product) of the given keys; one adapter per point is written under
`output`, each with a manifest naming its parents and coefficients, plus output/sweep.json
listing the points (what evaluation reads).
"""


def merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lora-vl merge", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Merge LoRA adapters in LoRA space (no base model loaded).",
        epilog=f"recipe keys:\n{describe(MergeRecipe)}\n\n{EXAMPLES}")
    p.add_argument("recipe", help="merge recipe YAML")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. inputs.1.weight=0.5)")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="sweep a key over values (repeat for a grid)")
    return p


def run_merge(argv: list[str]) -> int:
    args = merge_parser().parse_intermixed_args(argv)
    data, grid = load_sweep_data(args.recipe, args.overrides, args.sweep)
    if grid:
        out = run_sweep(data, grid, where=args.recipe)
        print(f"sweep written to {out} (index: {out}/sweep.json)")
        return 0
    out = run(build(MergeRecipe, data, where=args.recipe))
    print(f"merged adapter written to {out}")
    return 0


def main(argv: list[str]) -> int:
    argv = list(argv)
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    return run_merge(argv)

