"""`lora-vl plan RECIPE [--stage 1|2] [--eval] [--gpu-memory 24GB] [--measure] [key=value ...]`

Will it fit? Predicts the GPU memory and time of a recipe's training step (adapt stage 1 or 2,
safety SFT or DPO) or of evaluation generation, without a GPU and without downloading weights.

The recipe's model is built with random weights from its config (the paper models' configs
ship with the kit) at 1, 2 and 4 decoder layers of full width, at the recipe's quantization
(NF4 + double quant), bf16 compute, LoRA, trainable projector, gradient checkpointing and
optimizer, and one real step of the kit's code runs on the CPU while a tracker records the peak
of live tensor bytes — bytes do not depend on the device. A straight line per phase and
category predicts the full depth; data bytes scale with micro-batch × length. The card size a
step needs, the largest micro-batch per length that fits, and the step time are PREDICTIONS
with their assumptions printed. `--measure` runs the real full-size step on the GPU and prints
predicted vs measured (`torch.cuda.max_memory_allocated`). A 7B plan takes minutes on 2 CPU
cores and a few GiB of RAM (docs/benchmarks.md, "Memory planner"); where the CPU emulates bf16
(AVX2 only), the steps' matmuls run in fp32 with bf16 results (the same bytes, `plan/cpu_bf16.py`).

Evaluation: `--eval` plans batched generation (with the KV cache) of the recipe's model and
adapters, or give an evaluation suite (eval/paper.yaml) with --lm and --vision.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys

import torch

from lora_vl.artifacts import atomic_write_json
from lora_vl.errors import InputError
from lora_vl.plan import cpu_bf16
from lora_vl.plan.cost import GPUS, Gpu, generation_seconds, offload_seconds, step_seconds, train_flops
from lora_vl.plan.fit import GIB, DepthFit, Overhead, Prediction, largest_micro_batch, line, transient_note
from lora_vl.plan.step import measure, quiet_warnings
from lora_vl.plan.tracker import OPTIM_PAGED
from lora_vl.plan.workload import from_recipe

LENGTHS = (512, 1024, 2048, 4096)
CARDS = (12, 16, 24, 80)
MEASURE_NEW_TOKENS = 6  # generation: decode steps measured on the CPU (the rest is a straight line)


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 4 else f"{n / 2 ** 20:.1f} MiB"


def card_size(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(gib|gb|g)?\s*", text.lower())
    if not m:
        raise InputError(f"--gpu-memory {text!r}: expected a size such as 24GB")
    return float(m.group(1))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-vl plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="adapt or safety recipe (recipes/paper/...), or an eval suite (eval/paper.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides, e.g. stage2.optim.micro_batch_size=1")
    p.add_argument("--stage", type=int, choices=(1, 2),
                   help="adapt recipes: 1 = projector stage, 2 = LoRA stage (default)")
    p.add_argument("--eval", action="store_true", help="plan evaluation generation of this recipe's model + adapters")
    p.add_argument("--batch", type=int, help="generation: prompts per batch (default: the suite's, or 16)")
    p.add_argument("--new-tokens", type=int,
                   help="generation: tokens generated per prompt (default: the suite's, or 512)")
    p.add_argument("--prompt-length", type=int,
                   help="generation: prompt tokens incl. image tokens (default: image + 128)")
    p.add_argument("--adapter-rank", type=int, action="append",
                   help="eval suites: rank of each stacked adapter (default 128)")
    p.add_argument("--lm", help="LM hub id or path, instead of the recipe's "
                                "(e.g. a safety recipe whose base is not built yet)")
    p.add_argument("--vision", help="vision encoder hub id or path (with --lm)")
    p.add_argument("--gpu-memory", default="24GB", help="card size to plan for, e.g. 12GB (read as GiB; default 24GB)")
    p.add_argument("--gpu", choices=sorted(GPUS), default="rtx4090", help="GPU whose spec-sheet peak times the step")
    p.add_argument("--utilization", type=float, default=0.30, help="assumed share of the bf16 peak a step reaches")
    p.add_argument("--context-gib", type=float, default=Overhead.context_gib, help="assumed CUDA context size")
    p.add_argument("--slack", type=float, default=Overhead.slack, help="assumed allocator slack (share of the peak)")
    p.add_argument("--layers", default="1,2,4", help="decoder-layer counts to measure (default 1,2,4)")
    p.add_argument("--measure-batch", type=int, default=1, help="micro-batch measured on the CPU (default 1)")
    p.add_argument("--device", default="cpu", help="device of the planning runs (default cpu; bytes are the same)")
    p.add_argument("--measure", action="store_true", help="also run the full-size step and print predicted vs measured")
    p.add_argument("--measure-device", help="device of --measure (default: cuda; cpu runs the full model on the CPU)")
    p.add_argument("--json", help="also write the plan as JSON here")
    return p


def plan(args) -> dict:
    check_measure_device(args)  # before minutes of planning
    shape, w, notes = from_recipe(args.recipe, args.overrides, args)
    layers = sorted({int(x) for x in args.layers.split(",")})
    if len(layers) < 2 or layers[0] < 1:
        raise InputError(f"--layers {args.layers!r}: give two or more positive layer counts")
    device = torch.device(args.device)
    mw = dataclasses.replace(w, new_tokens=min(w.new_tokens, MEASURE_NEW_TOKENS)) if w.kind == "eval" else w
    if w.kind == "eval" and w.new_tokens < 3:
        raise InputError(f"--new-tokens {w.new_tokens}: plan at least 3")
    per_sample = 2 if w.kind == "dpo" else 1
    if device.type == "cpu" and w.kind != "eval":
        warn_slow_bf16(shape, w, layers, args.measure_batch * per_sample)
    runs, cache = [], {}
    with quiet_warnings():
        for n in layers:
            runs.append(measure(shape, mw, n, args.measure_batch, device, cache))
            print(f"  measured {n} layer(s): peak {gib(runs[-1].peak)} in {runs[-1].seconds:.0f} s", file=sys.stderr)
    cache.clear()
    fit = DepthFit(runs, new_tokens=mw.new_tokens)
    measured_tokens = args.measure_batch * per_sample * w.length
    scale = w.micro_batch * per_sample * w.length / measured_tokens
    pred = fit.predict(shape.layers, scale, w.new_tokens or None)
    overhead = Overhead(args.context_gib, args.slack)
    gpu = Gpu(args.gpu, *GPUS[args.gpu], utilization=args.utilization)
    card = card_size(args.gpu_memory)
    out = {
        "recipe": args.recipe, "workload": describe_workload(w), "model": describe_shape(shape), "notes": notes,
        "measured": [{"layers": r.layers, "micro_batch": r.micro_batch, "peak_bytes": r.peak,
                      "seconds": round(r.seconds, 1), "phases": {k: v.bytes for k, v in r.phases.items()}}
                     for r in runs],
        "device": str(device), "fit_residual": fit.residual(),
        "prediction": {"layers": shape.layers, "micro_batch": w.micro_batch, "length": w.length,
                       "phase": pred.phase, "breakdown": pred.breakdown, "tracked_bytes": pred.total,
                       "allocator_bytes": pred.allocator, "card_bytes": pred.card_bytes(overhead)},
        "overhead": dataclasses.asdict(overhead), "gpu": dataclasses.asdict(gpu),
        "autocast_gaps": sorted({g for r in runs for g in r.stats.get("autocast_gaps", [])}),
    }
    if w.kind == "eval":
        out["fits"] = {f"{c:g}": {str(w.length): largest_micro_batch(fit, shape.layers, measured_tokens, w.length, c,
                                                                     overhead, new_tokens=w.new_tokens)}
                       for c in sorted(set(CARDS + (card,)))}
        weights = sum(v for k, v in pred.breakdown.items() if "weights" in k or "adapters" in k)
        out["time"] = generation_seconds(shape, w.micro_batch, w.length, w.new_tokens, weights, gpu)
    else:
        lengths = [L for L in LENGTHS + (w.length,) if L > shape.image_tokens + 1
                   and L <= getattr(shape.text, "max_position_embeddings", L)]
        out["fits"] = {f"{c:g}": {str(L): largest_micro_batch(fit, shape.layers, measured_tokens, L, c, overhead,
                                                              per_sample) for L in sorted(set(lengths))}
                       for c in sorted(set(CARDS + (card,)))}
        host = 0
        if w.offload_checkpoints and all("host_offload_peak" in r.stats for r in runs):
            a, b = line([r.layers for r in runs], [r.stats["host_offload_peak"] for r in runs])
            host = out["prediction"]["host_offload_bytes"] = max(0, round((a + b * shape.layers) * scale))
        flops = workload_flops(shape, w, w.rows)
        accum = w.optim.global_batch_size // w.optim.micro_batch_size
        compute_s, copies_s = step_seconds(flops, gpu), offload_seconds(host, gpu)
        secs = compute_s + copies_s  # the copies run on the compute stream (transformers' offload): not overlapped
        out["time"] = {"flops_per_micro_batch": flops, "micro_batch_s": secs, "offload_copies_s": copies_s,
                       "optimizer_step_s": secs * accum, "accumulation": accum,
                       "tokens_per_s": w.rows * w.length / secs}
    if args.measure:
        out["measure"] = measure_full(shape, w, args, pred)
    return out


def workload_flops(shape, w, rows: int) -> float:
    """FLOPs of one micro-batch of `rows` sequences of this training workload (`plan/cost.py`)."""
    return train_flops(shape, w.kind, rows, w.length, w.lora.r if w.lora else 0, sum(f.r for f in w.frozen),
                       w.gradient_checkpointing, w.loss_chunk_tokens)


def warn_slow_bf16(shape, w, layers: list[int], rows: int) -> None:
    """Where this CPU emulates bf16 (AVX2 only), say that the measured steps run their matmuls in
    fp32 instead (`plan/cpu_bf16.py`: the same tensors, hence the same bytes) and how long the
    matmuls take at this CPU's fp32 rate."""
    if not cpu_bf16.bf16_emulated():
        return
    fp32, bf16 = cpu_bf16.matmul_rates()
    accum = w.optim.global_batch_size // w.optim.micro_batch_size
    full = workload_flops(shape, w, rows)
    flops = full * sum(layers) / shape.layers * min(accum, 2)  # the measured depths, 2 micro-batches with accumulation
    print(f"  note: this CPU emulates bf16 (a bf16 matmul ran {fp32 / bf16:.0f}x slower than fp32): the measured "
          f"steps run their matmuls in fp32 with bf16 results, the same bytes; ~{flops:.2g} FLOP, about "
          f"{flops / fp32 / 60:.0f} min of matmuls here", file=sys.stderr)


def check_measure_device(args) -> None:
    name = args.measure_device or "cuda"
    if args.measure and name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--measure runs the full-size step on a GPU, and CUDA is not available here "
                         "(--measure-device cpu runs it on the CPU instead: slow for a 7B model)")


def measure_full(shape, w, args, pred: Prediction) -> dict:
    """The real step at full depth and the recipe's micro-batch, on the GPU (or where asked)."""
    name = args.measure_device or "cuda"
    with quiet_warnings():
        run = measure(shape, w, shape.layers, w.micro_batch, torch.device(name))  # no cache alive: see `measure`
    tracked = max(p.bytes - p.breakdown.get(OPTIM_PAGED, 0) for p in run.phases.values())
    out = {"device": name, "tracked_allocator_bytes": tracked, "seconds": round(run.seconds, 1), **run.stats}
    if name.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(name))
    out["predicted_allocator_bytes"] = pred.allocator
    return out


def describe_workload(w) -> dict:
    d = {"kind": w.kind, "quantization": w.quantization, "micro_batch": w.micro_batch, "length": w.length,
         "rows": w.rows}
    if w.kind != "eval":
        d["gradient_checkpointing"] = w.gradient_checkpointing
        d["loss_chunk_tokens"] = w.loss_chunk_tokens
        d["frozen_dtype"] = w.frozen_dtype
        d["trained_dtype"] = w.trained_dtype
        d["offload_checkpoints"] = w.offload_checkpoints
    if w.lora is not None:
        d["lora_r"] = w.lora.r
    if w.frozen:
        d["frozen_adapter_ranks"] = [f.r for f in w.frozen]
    if w.optim is not None:
        d.update(optimizer=w.optim.optimizer, global_batch=w.optim.global_batch_size)
    if w.kind == "eval":
        d["new_tokens"] = w.new_tokens
    return d


def describe_shape(shape) -> dict:
    t = shape.text
    return {"source": shape.source, "layers": shape.layers, "hidden": t.hidden_size, "vocab": t.vocab_size,
            "vision_layers": shape.vision.num_hidden_layers, "image_tokens": shape.image_tokens}


KIND = {"stage1": "adapt stage 1 (projector)", "stage2": "adapt stage 2 (LoRA + projector)",
        "sft": "safety SFT (LoRA over the frozen VL adapter)", "dpo": "safety DPO (LoRA over the frozen VL adapter)",
        "eval": "evaluation generation (KV cache)"}


def report(p: dict, card: float) -> str:
    w, m, pr = p["workload"], p["model"], p["prediction"]
    lines = [f"lora-vl plan {p['recipe']}: {KIND[w['kind']]}",
             f"model: {m['source']} — {m['layers']} decoder layers, width {m['hidden']}, vocabulary {m['vocab']}, "
             f"{m['image_tokens']} image tokens per image",
             "work: " + ", ".join(f"{k} {v}" for k, v in w.items() if k != "kind")]
    lines += [f"note: {n}" for n in p["notes"]]
    what = "batch" if w["kind"] == "eval" else "micro-batch"
    lines.append(f"measured on {p['device']} (bf16 as on a GPU), {what} {p['measured'][0]['micro_batch']}:")
    lines += [f"  {r['layers']:>2} layer(s): peak {gib(r['peak_bytes'])}  ({r['seconds']:.0f} s)"
              for r in p["measured"]]
    lines.append(f"  straight-line fit over depth: largest residual {p['fit_residual']:.2%}")
    if p["autocast_gaps"]:
        lines.append(f"  warning: ops CUDA autocast runs in fp32 met bf16 here: {', '.join(p['autocast_gaps'])}")
    shape_txt = f"micro-batch {pr['micro_batch']} × {pr['length']}" if w["kind"] != "eval" else \
        f"batch {pr['micro_batch']} × {pr['length']} prompt tokens + {w['new_tokens']} new"
    lines.append(f"PREDICTED peak at {pr['layers']} layers, {shape_txt} (phase {pr['phase']}):")
    for cat, b in sorted(pr["breakdown"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {cat:<44} {gib(b):>11}")
    lines.append(f"  {'= tracked peak':<44} {gib(pr['tracked_bytes']):>11}")
    if "host_offload_bytes" in pr:
        lines.append(f"  {'(host memory, pinned: offloaded checkpoints)':<44} {gib(pr['host_offload_bytes']):>11}")
    if pr["allocator_bytes"] != pr["tracked_bytes"]:
        lines.append(f"  {'  without paged optimizer state':<44} {gib(pr['allocator_bytes']):>11}")
    lines.append("  (the tracked peak without paged state is what torch.cuda.max_memory_allocated reports)")
    o = p["overhead"]
    lines.append(f"PREDICTED card need: {gib(pr['card_bytes'])} (assumed: CUDA context {o['context_gib']} GiB, "
                 f"allocator slack {o['slack']:.0%}; paged optimizer state counted on the card)")
    verdict = "fits" if pr["card_bytes"] <= card * GIB else "does NOT fit"
    lines.append(f"  → {verdict} a {card:g} GB card (PREDICTION)")
    note = transient_note(Prediction(pr["phase"], pr["breakdown"]))
    if note:
        lines.append(f"  ({note})")
    lines.append(f"largest {what} that fits (PREDICTION; powers of two; 0 = not even 1):")
    for c, per_len in p["fits"].items():
        lines.append(f"  {c:>4} GB: " + ", ".join(f"length {L}: {b}" for L, b in per_len.items()))
    t, g = p["time"], p["gpu"]
    assumed = f"{g['name']} at {g['peak_flops'] / 1e12:.0f} TFLOP/s × {g['utilization']:.0%} (assumed)"
    if w["kind"] == "eval":
        lines.append(f"time (PREDICTION, {assumed}; decode at {g['bandwidth'] / 1e12:.2f} TB/s × "
                     f"{g['bandwidth_efficiency']:.0%}): prefill {t['prefill_s']:.2f} s "
                     f"+ decode {t['decode_s']:.1f} s per batch")
    else:
        copies = (f" (incl. {t['offload_copies_s']:.2f} s of checkpoint copies at {g['host_bandwidth'] / 1e9:.0f} GB/s "
                  f"× {g['host_efficiency']:.0%}, assumed)") if t.get("offload_copies_s") else ""
        lines.append(f"time (PREDICTION, {assumed}): {t['micro_batch_s']:.2f} s per micro-batch{copies}, "
                     f"{t['optimizer_step_s']:.1f} s per optimizer step ({t['accumulation']} micro-batches), "
                     f"{t['tokens_per_s']:.0f} tokens/s")
    if "measure" in p:
        ms = p["measure"]
        peak = ms.get("max_memory_allocated", ms["tracked_allocator_bytes"])
        lines.append(f"MEASURED full size on {ms.get('gpu', ms['device'])}: "
                     f"tracked {gib(ms['tracked_allocator_bytes'])}"
                     + (f", torch.cuda.max_memory_allocated {gib(ms['max_memory_allocated'])}"
                        if "max_memory_allocated" in ms else "")
                     + f"; predicted {gib(ms['predicted_allocator_bytes'])} "
                     f"({(ms['predicted_allocator_bytes'] / peak - 1):+.1%}); "
                     f"measured time {ms['step_s']:.2f} s per {'batch' if w['kind'] == 'eval' else 'micro-batch'}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parser().parse_intermixed_args(argv)
    card = card_size(args.gpu_memory)
    p = plan(args)
    print(report(p, card))
    if args.json:
        atomic_write_json(args.json, p)
        print(f"wrote {args.json}")
    return 0
