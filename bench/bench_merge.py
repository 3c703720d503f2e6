"""Benchmark of LoRA-space merging on 7B-shaped adapters (not a test; prints measured numbers).

  python bench/bench_merge.py                       # full: 32 layers, r=128 + r=64, all cases
  python bench/bench_merge.py --layers 2 --peft-layers 1   # quick reduced run

Each case runs in a fresh subprocess; time is wall-clock of the whole merge (read, merge,
write), memory is that process's peak RSS (ru_maxrss: includes the torch import and the
mmap'd input pages it touched). The PEFT comparison builds a Llama with 7B-shaped layers but
only --peft-layers layers, loads the same LoRA weights, and times add_weighted_adapter.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HIDDEN, INTER = 4096, 11008
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
          "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}
BASE = "bench/llama-2-7b-shaped"


def module_names(layers: int) -> list[str]:
    return [f"model.layers.{i}.{s}" for i in range(layers) for s in SHAPES]


def make_adapter(path: Path, layers: int, r: int, seed: int) -> None:
    """Random 7B-shaped adapter (B not zero, scaled like a trained one) written with safetensors."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for m in module_names(layers):
        d_out, d_in = SHAPES[m.split(".", 3)[3]]
        tensors[f"base_model.model.{m}.lora_A.weight"] = torch.randn(r, d_in, generator=g) / d_in ** 0.5
        tensors[f"base_model.model.{m}.lora_B.weight"] = torch.randn(d_out, r, generator=g) * 0.01
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": sorted(SHAPES),
           "base_model_name_or_path": BASE, "use_rslora": False}
    (path / "adapter_config.json").write_text(json.dumps(cfg))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: str, work: Path, rank: int) -> dict:
    """One merge case in this (fresh) process."""
    from lora_vl.merge.recipe import MergeRecipe
    from lora_vl.merge.run import run
    from lora_vl.recipe import build
    rss0 = peak_rss_mb()
    params = {"sum": {}, "compress": {"rank": rank}, "ties": {"method": "ties", "rank": rank, "density": 0.5},
              "dare": {"method": "dare", "rank": rank, "density": 0.5}}[case]
    recipe = build(MergeRecipe, {"inputs": [{"path": str(work / "a")}, {"path": str(work / "b")}],
                                 "output": str(work / f"out_{case}"), "overwrite": True, **params})
    t0 = time.perf_counter()
    out = run(recipe)
    secs = time.perf_counter() - t0
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    return {"case": case, "seconds": secs, "peak_rss_mb": peak_rss_mb(), "rss_after_import_mb": rss0, **summary}


def peft_compare(work: Path, peft_layers: int, rank: int, methods: list[str]) -> list[dict]:
    """Per module: our factor-space compression vs PEFT add_weighted_adapter, same LoRA weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from lora_vl.merge import dense
    from lora_vl.merge.algebra import compress, weighted_sum
    from lora_vl.merge.io import AdapterFile
    fa, fb = AdapterFile(work / "a"), AdapterFile(work / "b")
    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=peft_layers,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=256)
    with torch.device("meta"):  # base weights are not needed by add_weighted_adapter; LoRA weights are real
        model = LlamaForCausalLM(cfg)
    model.to_empty(device="cpu")
    targets = list({s.split(".")[1] for s in SHAPES})
    pm = get_peft_model(model, LoraConfig(r=fa.config["r"], lora_alpha=fa.config["lora_alpha"], target_modules=targets),
                        adapter_name="a")
    pm.add_adapter("b", LoraConfig(r=fb.config["r"], lora_alpha=fb.config["lora_alpha"], target_modules=targets))
    mods = module_names(peft_layers)
    lora_layers = {n.removeprefix("base_model.model."): m for n, m in pm.named_modules() if hasattr(m, "lora_A")}
    with torch.no_grad():
        for m in mods:
            for name, f in (("a", fa), ("b", fb)):
                fac = f.factors(m)
                lora_layers[m].lora_A[name].weight.copy_(fac.A)
                lora_layers[m].lora_B[name].weight.copy_(fac.B)
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        pm.add_weighted_adapter(["a", "b"], [1.0, 1.0], f"m_{method}", combination_type=method, svd_rank=rank,
                                density=0.5)
        peft_secs = (time.perf_counter() - t0) / len(mods)
        for m in mods:
            A, B = fa.factors(m), fb.factors(m)
            t0 = time.perf_counter()
            if method == "svd":
                ours, stats = compress(weighted_sum([(1.0, A), (1.0, B)]), rank)
            else:
                ref_dense = dense.ties([A.delta(torch.float32), B.delta(torch.float32)], [1.0, 1.0], 0.5)
                ours, stats = dense.factor_dense(ref_dense, rank)
            ours_secs = time.perf_counter() - t0
            ref = (A.delta(torch.float32) + B.delta(torch.float32)) if method == "svd" else ref_dense
            peft_delta = lora_layers[m].get_delta_weight(f"m_{method}")
            err = lambda d: (torch.linalg.norm(ref - d) / torch.linalg.norm(ref)).item()  # noqa: E731
            rows.append({"method": method, "module": m, "peft_s_per_module_avg": peft_secs, "ours_s": ours_secs,
                         "peft_rel_err": err(peft_delta), "ours_rel_err": err(ours.delta(torch.float32)),
                         "ours_reported_err": stats.rel_error})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=32, help="decoder layers of the adapters (7B: 32)")
    p.add_argument("--r1", type=int, default=128)
    p.add_argument("--r2", type=int, default=64)
    p.add_argument("--rank", type=int, default=128, help="target rank of compression / TIES / DARE")
    p.add_argument("--cases", default="sum,compress,ties,dare", help="comma list of sum,compress,ties,dare")
    p.add_argument("--peft-layers", type=int, default=1, help="layers of the PEFT comparison model (0: skip)")
    p.add_argument("--peft-methods", default="svd,ties_svd")
    p.add_argument("--workdir", default=None, help="where adapters are written (default: a temp dir)")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case here
    a = p.parse_args()
    if a.case:
        print(json.dumps(run_case(a.case, Path(a.workdir), a.rank)))
        return 0
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_merge_"))
    t0 = time.perf_counter()
    make_adapter(work / "a", a.layers, a.r1, 1)
    make_adapter(work / "b", a.layers, a.r2, 2)
    print(f"# adapters: {a.layers} layers, r={a.r1} and r={a.r2}, written in {time.perf_counter() - t0:.1f}s "
          f"to {work}; torch threads {torch.get_num_threads()}")
    for case in a.cases.split(","):
        res = subprocess.run([sys.executable, __file__, "--case", case, "--workdir", str(work), "--rank", str(a.rank)],
                             capture_output=True, text=True, check=True)
        print(res.stdout.strip().splitlines()[-1], flush=True)
    if a.peft_layers:
        for row in peft_compare(work, a.peft_layers, a.rank, a.peft_methods.split(",")):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
