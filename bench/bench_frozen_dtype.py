"""Parity of `model.frozen_dtype` and `model.trained_dtype` (issue 17) on the toy world under a
GPU's numerics, on the CPU.

On a CPU the compute dtype is fp32, so "compute" and "float32" are the same run; the options only
change numbers where the base loads in bf16 and training autocasts to bf16 (a GPU). This bench
emulates that on the CPU, as the planner does: the toy base loaded 4-bit with bf16 compute, stage 1's
projector, stage 2 prepared by the kit's own `lora_stage` under each policy, and N optimizer steps
of the loop's own `accumulate` / `optimizer_step` under training's CUDA autocast policy realised on
the CPU. Beside them, in the same run, the CPU's own fp32 run (today's CPU training). Same batches,
same seed; a constant learning rate (the recipe's, no schedule) for all arms.

    python bench/bench_frozen_dtype.py [--steps 20] [--micro-batch N] [--arms ARM ...] [--json OUT]

Needs `make adapt` first (the toy base and stage 1's projector). Prints each arm's losses and the
frozen non-4-bit bytes it holds.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from lora_vl.data.dataset import TrainSet
from lora_vl.models import lora as L
from lora_vl.models.load import NO_HUB_KERNELS, bnb_config, set_cpu_4bit_repacking
from lora_vl.recipe import load_recipe
from lora_vl.train.adapt import AdaptRecipe
from lora_vl.train.loop import accumulate, autocast_policy, make_optimizer, optimizer_step
from lora_vl.train.prepare import BasePolicy, lora_stage

CPU = torch.device("cpu")
ARMS = {  # name: (load dtype, frozen_dtype, trained_dtype, training's autocast policy of this device type)
    "fp32 (CPU today)": (torch.float32, "float32", "float32", "cpu"),
    "bf16, frozen float32 (GPU today)": (torch.bfloat16, "float32", "float32", "cuda"),
    "bf16, frozen compute": (torch.bfloat16, "compute", "float32", "cuda"),
    "bf16, frozen + trained compute": (torch.bfloat16, "compute", "compute", "cuda"),
}
REFERENCE = "bf16, frozen float32 (GPU today)"


def load_base(base: str, dtype: torch.dtype):
    """The kit's 4-bit loading policy (`bnb_config`) at an explicit dtype: `models/load.py:load_pretrained`
    picks the device's compute dtype, fp32 on a CPU, and this bench needs a GPU's bf16 on the CPU."""
    model = LlavaForConditionalGeneration.from_pretrained(
        base, dtype=dtype, use_safetensors=True, attn_implementation="sdpa", device_map={"": CPU},
        quantization_config=bnb_config(dtype), **NO_HUB_KERNELS)
    set_cpu_4bit_repacking(model, False)
    return model


def frozen_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters()
               if not p.requires_grad and type(p).__name__ != "Params4bit")


def run_arm(r: AdaptRecipe, arm: str, batches: list[dict]) -> dict:
    dtype, frozen_dtype, trained_dtype, autocast_on = ARMS[arm]
    torch.manual_seed(0)
    model = load_base(r.model.base_dir, dtype)
    L.load_projector(model, Path(r.output_dir) / "stage1/projector.safetensors")
    policy = BasePolicy(True, r.model.gradient_checkpointing, r.model.loss_chunk_tokens, frozen_dtype, trained_dtype)
    st = lora_stage(model, policy, r.lora, r.stage2.optim)
    optim = r.stage2.optim
    optimizer = make_optimizer(st.groups, optim)
    autocast = autocast_policy(autocast_on, run_on="cpu")
    st.model.train()
    losses, t0 = [], time.time()
    for step, batch in enumerate(batches):
        count = st.loss_fn.count(batch)
        loss = accumulate(st.model, step, [(0, batch)], [count], count, 1, st.loss_fn, optim, CPU,
                          st.pixel_dtype, autocast=autocast)
        optimizer_step(st.trainable, optimizer, optim)
        losses.append(round(float(loss), 5))
    return {"losses": losses, "last5_mean": round(sum(losses[-5:]) / len(losses[-5:]), 5),
            "last20_mean": round(sum(losses[-20:]) / len(losses[-20:]), 5),
            "frozen_non4bit_bytes": frozen_bytes(st.model), "trained_dtype": str(st.trainable[0].dtype),
            "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/toy/adapt.yaml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--micro-batch", type=int, help="records per step (default: the recipe's stage-2 micro-batch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), metavar="ARM",
                    help="which arms to run (default: all): " + "; ".join(ARMS))
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = load_recipe(AdaptRecipe, args.recipe)
    processor = LlavaProcessor.from_pretrained(r.model.base_dir)
    data = TrainSet(r.stage2.data, processor)
    mb = args.micro_batch or r.stage2.optim.micro_batch_size
    batches = [data.collate([data[(s * mb + i) % len(data)] for i in range(mb)]) for s in range(args.steps)]
    out = {"recipe": args.recipe, "steps": args.steps, "micro_batch": mb, "lr": r.stage2.optim.lr, "arms": {}}
    for arm in args.arms:
        res = run_arm(r, arm, batches)
        out["arms"][arm] = res
        print(f"{arm:34s} loss first {res['losses'][0]:.4f} last-5 mean {res['last5_mean']:.4f} "
              f"last-20 mean {res['last20_mean']:.4f} frozen non-4-bit {res['frozen_non4bit_bytes'] / 2**20:.2f} MiB "
              f"trained {res['trained_dtype']}  ({res['seconds']} s)")
    ref = out["arms"].get(REFERENCE, {}).get("last5_mean")
    out["relative_difference_last5"] = {}
    for arm in out["arms"]:
        if ref is not None and ARMS[arm][0] == torch.bfloat16 and arm != REFERENCE:
            out["relative_difference_last5"][arm] = diff = round(abs(out["arms"][arm]["last5_mean"] - ref) / ref, 5)
            print(f"{arm} vs {REFERENCE}, last-5 mean loss: {diff:.2%} apart")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
