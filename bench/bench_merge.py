"""Benchmark of LoRA-space merging on 7B-shaped adapters (not a test; prints measured numbers).

  python bench/bench_merge.py                       # full: 32 layers, r=128 + r=64, all cases
  python bench/bench_merge.py --layers 2 --peft-layers 1   # quick reduced run

The parent process imports no torch: adapter writing, every merge case and the PEFT comparison
each run in a fresh child (subprocess, fork+exec). Time is wall-clock of the whole merge (read,
merge, write, fsync). Memory, two ways:
  vmhwm_mb     VmHWM from /proc/self/status read inside the child at the end: the peak RSS of the
               exec'd image only (the fork-time copy of the parent is not counted).
  ru_maxrss_mb the child's ru_maxrss from os.wait4 in the parent; it also covers the pre-exec
               fork of the parent, which is small here (no torch in the parent).
Both count resident pages of mmap'd input files that the child touched (RssFile, clean page
cache that the kernel can drop); rss_anon_peak_mb is the anonymous part alone, sampled every 10 ms
by a thread (so it can miss a peak shorter than that). Page cache used by write() is not in RSS.
The inputs are in the page cache (just written) unless --cold, which drops them
(posix_fadvise DONTNEED) before each case. The PEFT comparison builds a Llama with 7B-shaped
layers but only --peft-layers layers, loads the same LoRA weights, and times
add_weighted_adapter per module (a wrapper around PEFT's per-module SVD method).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HIDDEN, INTER = 4096, 11008
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
          "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}
BASE = "bench/llama-2-7b-shaped"


def module_names(layers: int) -> list[str]:
    return [f"model.layers.{i}.{s}" for i in range(layers) for s in SHAPES]


def make_adapter(path: Path, layers: int, r: int, seed: int) -> None:
    """Random 7B-shaped adapter (B not zero, scaled like a trained one) written with safetensors."""
    import torch
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


def proc_status() -> dict[str, float]:
    """VmHWM / VmRSS / RssAnon / RssFile of this process in MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0]) / 1024
    return out


class AnonPeak(threading.Thread):
    """Samples RssAnon every 10 ms (the anonymous part of RSS, without mmap'd file pages)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0.0, threading.Event()

    def run(self):
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, proc_status()["RssAnon"])


def run_case(case: str, work: Path, rank: int) -> dict:
    """One merge case in this (fresh) process."""
    import torch
    from lora_vl.merge.recipe import MergeRecipe
    from lora_vl.merge.run import run
    from lora_vl.recipe import build
    before = proc_status()
    name, _, overrides = case.partition("@")  # e.g. ties@svd_niter=0: a case with recipe keys changed
    params = {"sum": {}, "compress": {"rank": rank}, "ties": {"method": "ties", "rank": rank, "density": 0.5},
              "dare": {"method": "dare", "rank": rank, "density": 0.5}}[name]
    params = {**params, **{k: json.loads(v) for k, v in (kv.split("=") for kv in filter(None, overrides.split(";")))}}
    recipe = build(MergeRecipe, {"inputs": [{"path": str(work / "a")}, {"path": str(work / "b")}],
                                 "output": str(work / f"out_{case}"), "overwrite": True, **params})
    shutil.rmtree(recipe.output, ignore_errors=True)  # time the merge, not the removal of a previous output
    sampler = AnonPeak()
    sampler.start()
    t0 = time.perf_counter()
    out = run(recipe)
    secs = time.perf_counter() - t0
    sampler.stop.set()
    end = proc_status()
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    size = (out / "adapter_model.safetensors").stat().st_size
    return {"case": case, "seconds": round(secs, 2), "vmhwm_mb": end["VmHWM"],
            "rss_anon_peak_mb": max(sampler.peak, end["RssAnon"]), "rss_file_end_mb": end["RssFile"],
            "rss_after_import_mb": before["VmRSS"], "output_mb": size / 2 ** 20,
            "torch_threads": torch.get_num_threads(), **summary}


def peft_compare(work: Path, peft_layers: int, rank: int, methods: list[str]) -> list[dict]:
    """Per module: ours vs PEFT add_weighted_adapter on the same LoRA weights, in this one process.

    svd: ours = exact concatenated sum + factor-space compression (algebra.compress); PEFT = dense
    ΔW, full LAPACK SVD (its defaults: full_matrices=True, driver None). ties_svd: ours = dense TIES
    (dense.ties) + dense.factor_dense (randomized SVD, as `lora-vl merge method=ties` runs it); PEFT =
    its ties + full SVD. Errors: ||ref − result||_F / ||ref||_F with ref the dense Σ (svd) or our dense
    TIES result (ties_svd), computed in float64.
    """
    import torch
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
    # Time PEFT per module: wrap its per-module method (called once per LoRA layer).
    names = {id(layer): m for m, layer in lora_layers.items()}
    peft_secs: dict[str, float] = {}
    inner = pm.base_model._svd_generalized_task_arithmetic_weighted_adapter

    def timed(combination_type, adapters, weights, new_rank, target, *args, **kw):
        t0 = time.perf_counter()
        out = inner(combination_type, adapters, weights, new_rank, target, *args, **kw)
        peft_secs[names[id(target)]] = time.perf_counter() - t0
        return out
    pm.base_model._svd_generalized_task_arithmetic_weighted_adapter = timed
    rows = []
    for method in methods:
        peft_secs.clear()
        pm.add_weighted_adapter(["a", "b"], [1.0, 1.0], f"m_{method}", combination_type=method, svd_rank=rank,
                                density=0.5)
        for m in mods:
            A, B = fa.factors(m), fb.factors(m)
            t0 = time.perf_counter()
            if method == "svd":
                ours, stats = compress(weighted_sum([(1.0, A), (1.0, B)]), rank)
            else:
                ref_dense = dense.ties([A.delta(torch.float32), B.delta(torch.float32)], [1.0, 1.0], 0.5)
                ours, stats = dense.factor_dense(ref_dense, rank)
            ours_secs = time.perf_counter() - t0
            ref = (A.delta() + B.delta()) if method == "svd" else ref_dense.double()
            with torch.no_grad():
                peft_delta = lora_layers[m].get_delta_weight(f"m_{method}").double()

            def err(d, ref=ref):
                return (torch.linalg.norm(ref - d) / torch.linalg.norm(ref)).item()

            rows.append({"method": method, "module": m, "shape": list(SHAPES[m.split(".", 3)[3]]),
                         "peft_s": round(peft_secs[m], 3), "ours_s": round(ours_secs, 3),
                         "speedup": round(peft_secs[m] / ours_secs, 1), "peft_rel_err": err(peft_delta),
                         "ours_rel_err": err(ours.delta()), "ours_reported_err": stats.rel_error})
    return rows


def child(args: list[str]) -> tuple[list[str], dict]:
    """Run this script with `args` in a fresh process; its stdout lines and its rusage (os.wait4)."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.read().splitlines()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    return lines, {"ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1)}


def drop_cache(paths: list[Path]) -> None:
    """Drop the clean page cache of these files (no root needed), so the next read is from disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=32, help="decoder layers of the adapters (7B: 32)")
    p.add_argument("--r1", type=int, default=128)
    p.add_argument("--r2", type=int, default=64)
    p.add_argument("--rank", type=int, default=128, help="target rank of compression / TIES / DARE")
    p.add_argument("--cases", default="sum,compress,ties,dare", help="comma list of sum,compress,ties,dare; "
                   "a case may change recipe keys: ties@svd_niter=0 (several: @k=v;k=v)")
    p.add_argument("--peft-layers", type=int, default=1, help="layers of the PEFT comparison model (0: skip)")
    p.add_argument("--peft-methods", default="svd,ties_svd")
    p.add_argument("--workdir", default=None, help="where adapters are written (default: a temp dir)")
    p.add_argument("--reuse", action="store_true", help="keep adapters already in --workdir")
    p.add_argument("--cold", action="store_true", help="drop the inputs' page cache before each case")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case here
    p.add_argument("--make", default=None, help=argparse.SUPPRESS)  # internal: write adapter <name>:<r>:<seed>
    p.add_argument("--peft", action="store_true", help=argparse.SUPPRESS)  # internal: the PEFT comparison
    a = p.parse_args()
    if a.case or a.make or a.peft:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        if a.case:
            print(json.dumps(run_case(a.case, Path(a.workdir), a.rank)))
        elif a.make:
            name, r, seed = a.make.split(":")
            make_adapter(Path(a.workdir) / name, a.layers, int(r), int(seed))
        else:
            for row in peft_compare(Path(a.workdir), a.peft_layers, a.rank, a.peft_methods.split(",")):
                print(json.dumps(row), flush=True)
        return 0
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_merge_"))
    t0 = time.perf_counter()
    for name, r, seed in (("a", a.r1, 1), ("b", a.r2, 2)):
        if not (a.reuse and (work / name / "adapter_model.safetensors").exists()):
            child(["--make", f"{name}:{r}:{seed}", "--workdir", str(work), "--layers", str(a.layers)])
    print(f"# adapters: {a.layers} layers, r={a.r1} and r={a.r2}, ready in {time.perf_counter() - t0:.1f}s "
          f"in {work}; {os.cpu_count()} CPUs; inputs {'cold (cache dropped)' if a.cold else 'in page cache'}",
          flush=True)
    for case in filter(None, a.cases.split(",")):
        if a.cold:
            drop_cache([work / n / "adapter_model.safetensors" for n in "ab"])
        lines, usage = child(["--case", case, "--workdir", str(work), "--rank", str(a.rank)])
        print(json.dumps({**json.loads(lines[-1]), **usage}), flush=True)
    if a.peft_layers:
        lines, usage = child(["--peft", "--workdir", str(work), "--rank", str(a.rank), "--peft-layers",
                              str(a.peft_layers), "--peft-methods", a.peft_methods])
        for line in lines:
            print(line, flush=True)
        print(json.dumps({"peft_compare": usage}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
