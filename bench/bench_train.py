"""Training-step benchmark: tokens/s and peak memory, 4-bit vs 16-bit LoRA, on a given model
shape; and the padding fraction of length-grouped vs random batching. Prints measured numbers
only; both arms of each comparison run in the same invocation.

  python bench/bench_train.py                      # small CPU shape (minutes)
  python bench/bench_train.py --preset llava7b     # Llama-2-7B + CLIP-L/336 shapes, random init (GPU)
  python bench/bench_train.py ... --json PATH      # also write the printed records as one JSON (bench/gpu_check.py)

Each arm runs in its own subprocess so that peak memory (GPU: torch max allocated; CPU: the
process's max RSS) belongs to that arm alone. The model is random-init from configs, saved
once to a temp dir and loaded under the kit's real loading policy (`load_pretrained`, behind `load_vlm`).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from lora_vl.artifacts import atomic_write_json
from lora_vl.data.batching import length_grouped_batches, padding_fraction, random_batches
from lora_vl.models import lora as L
from lora_vl.models.load import load_pretrained
from lora_vl.train.config import LoraSettings

PRESETS = {
    "smoke": dict(hidden=64, inter=128, layers=2, heads=4, vocab=1000, vis_hidden=32, vis_layers=2,
                  vis_heads=2, image=56, patch=14, seq=64, steps=2),  # checks the script runs
    "small": dict(hidden=512, inter=1376, layers=4, heads=8, vocab=32000, vis_hidden=256, vis_layers=4,
                  vis_heads=4, image=224, patch=14, seq=512, steps=4),
    # Llama-2-7B (4096 x 32 layers, 11008 MLP; 32000 tokens + <image>) + CLIP ViT-L/14-336 (1024 x 24 layers)
    "llava7b": dict(hidden=4096, inter=11008, layers=32, heads=32, vocab=32001, vis_hidden=1024,
                    vis_layers=24, vis_heads=16, image=336, patch=14, seq=2048, steps=6),
}


def build_checkpoint(p: dict, out: Path) -> None:
    text = LlamaConfig(hidden_size=p["hidden"], intermediate_size=p["inter"], num_hidden_layers=p["layers"],
                       num_attention_heads=p["heads"], num_key_value_heads=p["heads"], vocab_size=p["vocab"],
                       max_position_embeddings=4096)
    vision = CLIPVisionConfig(hidden_size=p["vis_hidden"], intermediate_size=p["vis_hidden"] * 4,
                              num_hidden_layers=p["vis_layers"], num_attention_heads=p["vis_heads"],
                              image_size=p["image"], patch_size=p["patch"])
    n_img = (p["image"] // p["patch"]) ** 2
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=p["vocab"] - 1,
                      image_seq_length=n_img)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlavaForConditionalGeneration(cfg).to(torch.bfloat16)
    model.save_pretrained(out)
    (out / "n_img.json").write_text(json.dumps(n_img))


def worker(ckpt: Path, quant: str, p: dict, flops_peak: float) -> dict:
    # the bench checkpoint has no processor, so load the model alone under the kit's 4-bit policy
    model = load_pretrained(LlavaForConditionalGeneration, ckpt, quant, None, None)
    mem = {}
    if torch.cuda.is_available():  # loading's own peak, apart from the steps'
        mem["load_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        mem["loaded_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    model = L.prepare_base(model, quant == "4bit", gradient_checkpointing=True)
    model = L.add_lora(model, LoraSettings(r=128, alpha=256, dropout=0.05), train_projector=True)
    device = next(p_ for p_ in model.parameters() if p_.requires_grad).device
    if device.type == "cuda":
        mem["prepared_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()  # peak_gpu_gib below: the training steps alone
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    n_img = json.loads((ckpt / "n_img.json").read_text())
    ids = torch.randint(0, p["vocab"] - 2, (1, p["seq"]), device=device)
    ids[0, 1:1 + n_img] = p["vocab"] - 1
    pixels = torch.randn(1, 3, p["image"], p["image"], device=device)
    batch = dict(input_ids=ids, labels=ids.clone(), attention_mask=torch.ones_like(ids),
                 pixel_values=pixels)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    times = []
    for _step in range(p["steps"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    steady = times[1:] or times   # first step warms up kernels and allocator
    tps = p["seq"] / (sum(steady) / len(steady))
    out = {"quant": quant, "device": str(device), "tokens_per_s": round(tps, 1),
           "step_s": round(sum(steady) / len(steady), 3), **mem,
           "gradient_checkpointing": model.training and any(getattr(m, "gradient_checkpointing", False) is True
                                                            for m in model.modules())}
    if device.type == "cuda":
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["gpu"] = torch.cuda.get_device_name()
        # model FLOPs per token = 4·N: forward 2N + input-gradient backward 2N; the frozen base
        # needs no weight gradients and recomputation is not counted (convention for MFU)
        n_params = p["layers"] * (4 * p["hidden"] ** 2 + 3 * p["hidden"] * p["inter"]) + 2 * p["vocab"] * p["hidden"]
        out["mfu"] = round(4 * n_params * tps / flops_peak, 4)
    out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def padding_report(batch_size: int, n: int = 20000, seed: int = 0) -> dict:
    """Padding fraction on LLaVA-Instruct-like lengths: 576 image tokens on most samples plus a
    log-normal text length (a stand-in distribution; say so when quoting it)."""
    rng = random.Random(seed)
    lengths = [(576 if rng.random() < 0.85 else 0) + int(math.exp(rng.gauss(math.log(180), 0.8)))
               for _ in range(n)]
    return {"batch_size": batch_size,
            "random": round(padding_fraction(lengths, random_batches(lengths, batch_size, seed)), 4),
            "length_grouped": round(padding_fraction(lengths, length_grouped_batches(lengths, batch_size, seed)), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--quant", nargs="+", default=["4bit", "none"])
    ap.add_argument("--flops-peak", type=float, default=989e12, help="dense bf16 peak (H100 SXM ≈ 989e12)")
    ap.add_argument("--json", metavar="PATH",
                    help="also write {preset, seq, arms, padding} here (a failed arm: its error)")
    ap.add_argument("--worker", nargs=2, metavar=("CKPT", "QUANT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    p = PRESETS[a.preset]
    if a.worker:
        print(json.dumps(worker(Path(a.worker[0]), a.worker[1], p, a.flops_peak)))
        return 0
    record = {"preset": a.preset, "seq": p["seq"], "arms": [], "padding": []}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        t = time.time()
        build_checkpoint(p, ckpt)
        print(f"built random-init {a.preset} Llava in {time.time() - t:.0f}s")
        for quant in a.quant:
            res = subprocess.run([sys.executable, __file__, "--preset", a.preset, "--flops-peak", str(a.flops_peak),
                                  "--worker", str(ckpt), quant], capture_output=True, text=True)
            if res.returncode:
                print(f"{quant}: failed\n{res.stderr[-2000:]}")
                record["arms"].append({"quant": quant, "error": res.stderr[-2000:]})
                continue
            arm = json.loads(res.stdout.strip().splitlines()[-1])
            record["arms"].append(arm)
            print(json.dumps({"preset": a.preset, "seq": p["seq"], **arm}))
    for bs in (8, 16):
        record["padding"].append(padding_report(bs))
        print(json.dumps({"padding": record["padding"][-1]}))
    if a.json:
        atomic_write_json(a.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
