"""The prepared GPU check (issue 17, item 4): one command validates the kit's GPU claims on the
first GPU a session gets, in under 10 minutes, and writes ONE JSON of predicted vs measured.

  make gpu-check                                   # = python bench/gpu_check.py
  python bench/gpu_check.py --dry-run              # the commands and their budgets; no GPU needed
  python bench/gpu_check.py --out $OUT/gpu_check.json   # on a lent device machine (docs/benchmarks.md)

Checks, each a subprocess with its own time budget; one that fails or runs out of time does not
stop the others:
  plan-stage2-1x2048   lora-vl plan RECIPE stage2 at micro-batch 1 × 2048 --measure, the recipe's own memory
                       settings (since 2026-12-04 frozen_dtype compute, loss_chunk_tokens 1024): the planner's
                       prediction (made on the CPU, as users make it) vs torch.cuda.max_memory_allocated
                       and the measured step time
  plan-stage2-4x2048-lean  the same at micro-batch 4 × 2048 with all four memory options
                       (model.frozen_dtype=compute, model.trained_dtype=compute, model.loss_chunk_tokens=1024,
                       model.offload_checkpoints=true; the last two are not defaults)
  bench-train-llava7b  bench/bench_train.py --preset llava7b: tokens/s, peak GPU memory, MFU (4-bit, 16-bit)
  generation-batched   bench/bench_generation.py --device cuda: batched vs batch-1 greedy generation on a
                       small Llava (the evaluation's `generate_tokens`), items/s and whether the answers agree
  eval-vllm            a short `lora-vl eval` on a tiny Llava with the vLLM backend, beside the HF
                       backend on the same model (skipped "vllm not installed" when `import vllm` fails)

The JSON (default $OUT/gpu_check.json when OUT is set, else outputs/gpu_check.json) is rewritten
atomically after every check, so a run killed at its limit still leaves the finished checks.
Keys: kind, created, finished, dry_run, device (torch.cuda.get_device_name), cuda, versions,
budget_s, wall_s, ok, checks[] = {name, command, budget_s, status (ok / failed / skipped /
timed_out), reason, wall_s, returncode, predicted, measured, comparison, raw, output_tail}.
Exit status: 0 every check ok or skipped; 1 a check failed or timed out; 2 no CUDA GPU here.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/gpu_check.py` imports this checkout's lora_vl

from lora_vl.artifacts import atomic_write_json  # noqa: E402  (atomic_write_text underneath)

GIB = 2 ** 30
RECIPE = "recipes/paper/adapt_llama2_chat_7b.yaml"
NO_CUDA = "gpu-check needs a CUDA GPU and none is available here (--dry-run lists the checks without one)"
# Budgets in seconds, 540 in all (9 min) so the whole run ends inside a device machine's 10-minute
# command. Measured on an H200 (2026-12-04, docs/benchmarks.md "GPU validation"): each plan 37-39 s,
# bench_train 94 s (it builds, saves and twice loads a random 7B, 13.5 GB in bf16), generation 40 s;
# the eval check has not run yet (no vLLM there).
BUDGETS = {"plan": 120, "train": 180, "generation": 60, "eval": 60}
TAIL = 4000  # characters of a check's output kept in the JSON


@dataclass
class Check:
    name: str
    argv: list[str]
    budget_s: float
    parse: str | None = None  # "plan" / "train" / "eval": how its JSON output is read
    json_path: str | None = None  # where the tool writes its JSON (deleted before the run)
    needs: str | None = None  # a module that must import, else the check is skipped
    result: dict = field(default_factory=dict)


# all four memory options (the first and third are the defaults since 2026-12-04; stated so that the
# check plans the same step whatever the recipe says)
LEAN = ["model.frozen_dtype=compute", "model.trained_dtype=compute", "model.loss_chunk_tokens=1024",
        "model.offload_checkpoints=true"]


def default_checks(a) -> list[Check]:
    work = Path(a.work)
    py = sys.executable  # not `lora-vl`: on a device machine the kit is on PYTHONPATH, not installed
    checks = []
    # 1 x 2048 with the recipe's own memory settings; 4 x 2048 with all four options (issue 17's
    # target there: <= 12 GiB), so one GPU run measures both
    for mb, name, lean in ((1, "plan-stage2-1x2048", []), (4, "plan-stage2-4x2048-lean", LEAN)):
        js = str(work / f"plan_{mb}x2048{'_lean' if lean else ''}.json")
        checks.append(Check(name, [
            py, "-m", "lora_vl.cli", "plan", a.recipe, "--stage", "2", f"stage2.optim.micro_batch_size={mb}",
            "stage2.data.max_length=2048", *lean, "--measure", "--gpu", a.gpu, "--device", a.plan_device,
            "--json", js], a.plan_budget, "plan", js))
    js = str(work / "bench_train.json")
    checks.append(Check("bench-train-llava7b", [py, "bench/bench_train.py", "--preset", "llava7b", "--json", js],
                        a.train_budget, "train", js))
    js = str(work / "generation.json")
    checks.append(Check("generation-batched", [py, "bench/bench_generation.py", "--device", "cuda", "--n", "64",
                                               "--hidden", "1024", "--layers", "8", "--json", js],
                        a.generation_budget, "generation", js))
    checks.append(Check("eval-vllm", [py, "bench/gpu_check.py", "--eval-worker", str(work / "eval"),
                                      "--backends", "hf", "vllm"],
                        a.eval_budget, "eval", str(work / "eval" / "eval_check.json"), needs="vllm"))
    for spec in a.command:  # NAME=CMD replaces a check's command line (another recipe, a quick test)
        name, _, cmd = spec.partition("=")
        match = [c for c in checks if c.name == name]
        if not match or not cmd:
            sys.exit(f"--command {spec!r}: expected NAME=COMMAND with NAME one of {[c.name for c in checks]}")
        match[0].argv = shlex.split(cmd)
    return [c for c in checks if not a.only or c.name in a.only]


def run_check(c: Check) -> dict:
    """Run one check in its own process group (a timeout kills its children too: bench_train's
    arms, the eval's engines), output to a file (no pipe to fill), then read its JSON."""
    r = {"name": c.name, "command": shlex.join(c.argv), "budget_s": c.budget_s}
    if c.needs:
        probe = subprocess.run([sys.executable, "-c", f"import {c.needs}"], capture_output=True, text=True)
        if probe.returncode:
            lines = probe.stderr.strip().splitlines()
            return {**r, "status": "skipped", "reason": f"{c.needs} not installed",
                    "detail": lines[-1] if lines else ""}
    if c.json_path:
        Path(c.json_path).unlink(missing_ok=True)  # never read a previous run's numbers
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(c.argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as e:
            return {**r, "status": "failed", "reason": f"could not start: {e}", "wall_s": 0.0}
        timed_out = False
        try:
            rc = proc.wait(timeout=c.budget_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        with contextlib.suppress(ProcessLookupError):  # also what it left running (vLLM's engine)
            os.killpg(proc.pid, signal.SIGKILL)  # the group this check started, by its id
        rc = proc.wait()
        r["wall_s"] = round(time.perf_counter() - t0, 1)
        log.seek(0)
        r["output_tail"] = log.read()[-TAIL:]
    r["returncode"] = rc
    if timed_out:
        return {**r, "status": "timed_out", "reason": f"over its budget of {c.budget_s:g} s"}
    raw = None
    if c.json_path and Path(c.json_path).is_file():
        raw = json.loads(Path(c.json_path).read_text())
    if rc:
        return {**r, "status": "failed", "reason": f"exit status {rc}", "raw": raw}
    if c.json_path and raw is None:
        return {**r, "status": "failed", "reason": f"wrote no JSON at {c.json_path}"}
    r.update(status="ok", raw=raw)
    if c.parse and raw is not None:
        r.update(PARSERS[c.parse](raw))
        failed = r.pop("failed_parts", None)
        if failed:
            r.update(status="failed", reason="failed: " + ", ".join(failed))
    return r


def parse_plan(p: dict) -> dict:
    pred, ms, t = p["prediction"], p.get("measure", {}), p.get("time", {})
    measured_bytes = ms.get("max_memory_allocated", ms.get("tracked_allocator_bytes"))
    out = {"predicted": {"max_memory_allocated_gib": round(pred["allocator_bytes"] / GIB, 3),
                         "tracked_peak_gib": round(pred["tracked_bytes"] / GIB, 3),
                         "card_need_gib": round(pred["card_bytes"] / GIB, 3), "peak_phase": pred["phase"],
                         "micro_batch_s": t.get("micro_batch_s"), "assumed_gpu": p["gpu"]["name"],
                         "assumed_utilization": p["gpu"]["utilization"], "fit_residual": p["fit_residual"]},
           "measured": {"device": ms.get("gpu", ms.get("device")), "micro_batch_s": ms.get("step_s"),
                        "max_memory_allocated_gib": None if "max_memory_allocated" not in ms
                        else round(ms["max_memory_allocated"] / GIB, 3),
                        "tracked_peak_gib": None if "tracked_allocator_bytes" not in ms
                        else round(ms["tracked_allocator_bytes"] / GIB, 3),
                        "autocast_gaps": ms.get("autocast_gaps", [])}}
    cmp = {}
    if measured_bytes:  # on a GPU: vs max_memory_allocated; on a CPU (tests): vs the tracker
        cmp["memory_error"] = round(pred["allocator_bytes"] / measured_bytes - 1, 4)
        cmp["memory_within_10pct"] = abs(cmp["memory_error"]) <= 0.10  # the planner's stated target
    if t.get("micro_batch_s") and ms.get("step_s"):
        cmp["time_error"] = round(t["micro_batch_s"] / ms["step_s"] - 1, 4)
    out["comparison"] = cmp
    return out


def parse_train(b: dict) -> dict:
    keys = ("tokens_per_s", "step_s", "peak_gpu_gib", "load_peak_gib", "loaded_gib", "prepared_gib", "mfu", "gpu",
            "device", "peak_rss_gib", "gradient_checkpointing")
    return {"predicted": None,  # bench_train measures only; the planner's predictions are the plan checks
            "measured": {a["quant"]: {k: a[k] for k in keys if k in a} for a in b["arms"] if "error" not in a},
            "failed_parts": [f"arm {a['quant']}" for a in b["arms"] if "error" in a]}


def parse_generation(g: dict) -> dict:
    return {"predicted": None, "measured": g,
            "comparison": {"speedup": g["speedup"], "identical_outputs": g["identical_outputs"]}}


def parse_eval(e: dict) -> dict:
    return {"predicted": None, "measured": e["backends"],
            "comparison": {k: e[k] for k in ("compared", "identical_answers") if k in e},
            "failed_parts": [f"backend {b}" for b, v in e["backends"].items() if v["returncode"]]}


PARSERS = {"plan": parse_plan, "train": parse_train, "generation": parse_generation, "eval": parse_eval}


def environment() -> dict:
    import torch

    versions = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "bitsandbytes", "peft", "accelerate", "vllm"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else None, "cuda": torch.version.cuda,
            "versions": versions}


def report(results: list[dict], env: dict, budget: float, t0: float, *, dry_run: bool, finished: bool) -> dict:
    return {"kind": "lora_vl gpu check", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "finished": finished, "dry_run": dry_run, **env, "budget_s": budget,
            "wall_s": round(time.perf_counter() - t0, 1),
            "ok": all(r["status"] in ("ok", "skipped") for r in results), "checks": results}


def run(checks: list[Check], out: str | Path, *, dry_run: bool = False) -> int:
    """Run (or, dry, list) the checks in order; rewrite `out` after each; 1 if any failed or timed out."""
    env, t0, budget = environment(), time.perf_counter(), sum(c.budget_s for c in checks)
    results: list[dict] = []
    print(f"gpu-check: {len(checks)} checks, budget {budget:g} s, device {env['device']}, writing {out}", flush=True)
    for c in checks:
        if dry_run:
            print(f"  {c.name:<24} {c.budget_s:>5g} s  {shlex.join(c.argv)}")
            results.append({"name": c.name, "command": shlex.join(c.argv), "budget_s": c.budget_s,
                            "status": "skipped", "reason": "dry run"})
        else:
            try:
                results.append(run_check(c))
            except Exception as e:  # an unreadable output must not stop the other checks
                results.append({"name": c.name, "command": shlex.join(c.argv), "budget_s": c.budget_s,
                                "status": "failed", "reason": f"gpu_check: {type(e).__name__}: {e}"})
            r = results[-1]
            print(f"  {c.name:<24} {r['status']:<9} {r.get('wall_s', 0):>6.1f} s  {r.get('reason', '')}"
                  f"  {json.dumps(r.get('comparison', ''))}", flush=True)
        atomic_write_json(out, report(results, env, budget, t0, dry_run=dry_run, finished=False))
    final = report(results, env, budget, t0, dry_run=dry_run, finished=True)
    atomic_write_json(out, final)
    print(f"gpu-check: {'ok' if final['ok'] else 'FAILED'} in {final['wall_s']:.0f} s; wrote {out}")
    return 0 if final["ok"] else 1


def eval_worker(root: Path, backends: list[str]) -> int:
    """A tiny Llava, a 3-benchmark suite from the test fixtures, `lora-vl eval` once per backend
    (each its own process: vLLM takes most of the card), then how many answers agree."""
    import shutil

    import yaml

    from lora_vl.models.compose import ComposeSpec, compose, save_composed
    from lora_vl.models.tiny import build_tiny_parts

    shutil.rmtree(root, ignore_errors=True)  # a previous run's generation cache would answer for us
    parts = build_tiny_parts(root / "parts", hidden=256, layers=2)  # head dim 64: every vLLM attention backend takes it
    model, proc = compose(ComposeSpec(lm=str(parts["lm"]), vision=str(parts["vision"])))  # bf16
    save_composed(model, proc, root / "llava", manifest={"kind": "gpu-check"})
    fx = REPO / "tests" / "fixtures" / "eval"
    suite = {"name": "gpu-check", "generation": {"batch_size": 8, "max_new_tokens": 16},
             "judges": [{"name": "kw", "kind": "refusal"}],
             "benchmarks": [{"name": "xstest", "reader": "xstest", "source": str(fx / "xstest"), "subset": "all",
                             "judges": ["kw"]},
                            {"name": "mmb", "reader": "mmbench", "source": str(fx / "mmbench")},
                            {"name": "figstep", "reader": "figstep", "source": str(fx / "figstep")}]}
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    record: dict = {"backends": {}}
    answers = {}
    for b in backends:
        out = root / f"eval-{b}"
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "lora_vl.cli", "eval", str(root / "suite.yaml"), "--model",
                              str(root / "llava"), "--out", str(out), f"generation.backend={b}"],
                             capture_output=True, text=True)
        entry = {"returncode": res.returncode, "seconds": round(time.perf_counter() - t, 2)}
        if res.returncode:
            entry["error"] = (res.stdout + res.stderr)[-2000:]
        else:
            lines = (out / "generations.jsonl").read_text().splitlines()
            answers[b] = {(g["benchmark"], g["id"]): g["response"] for g in map(json.loads, lines)}
            entry.update(answers=len(answers[b]), answers_per_s=round(len(answers[b]) / entry["seconds"], 2))
        record["backends"][b] = entry
    if len(answers) == 2:  # greedy on the same weights: equal up to kernel numerics
        (x, y) = answers.values()
        record["compared"] = len(x.keys() & y.keys())
        record["identical_answers"] = sum(x[k] == y[k] for k in x.keys() & y.keys())
    atomic_write_json(root / "eval_check.json", record)
    return 1 if any(v["returncode"] for v in record["backends"].values()) else 0


def arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "outputs"
    default_out = out_dir / "gpu_check.json"
    ap.add_argument("--out", default=str(default_out), help=f"the report (default {default_out})")
    ap.add_argument("--dry-run", action="store_true",
                    help="list the commands and budgets; write every check as skipped")
    ap.add_argument("--work", default=str(REPO / "outputs/gpu_check"), help="the tools' own outputs (kept)")
    ap.add_argument("--recipe", default=RECIPE, help="adapt recipe whose stage 2 is planned and measured")
    ap.add_argument("--gpu", default="h100-sxm", help="spec sheet the plan's time prediction assumes "
                    "(an H200 has the H100 SXM's bf16 peak)")
    # cuda by default: the planner's bytes do not depend on its device (lora-vl plan --help), and a
    # CPU without native bf16 (AVX2 only) takes hours to plan a 7B step, past the 10-minute budget.
    ap.add_argument("--plan-device", default="cuda", help="device of the planning runs (default cuda: "
                    "seconds; cpu: as users plan on a laptop, minutes to hours)")
    ap.add_argument("--plan-budget", type=float, default=BUDGETS["plan"], help="seconds per plan check")
    ap.add_argument("--train-budget", type=float, default=BUDGETS["train"], help="seconds for bench_train")
    ap.add_argument("--generation-budget", type=float, default=BUDGETS["generation"],
                    help="seconds for the batched-generation check")
    ap.add_argument("--eval-budget", type=float, default=BUDGETS["eval"], help="seconds for the eval check")
    ap.add_argument("--only", nargs="+", help="run only these checks (names as listed by --dry-run)")
    ap.add_argument("--command", action="append", default=[], metavar="NAME=CMD", help="replace a check's command")
    ap.add_argument("--eval-worker", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--backends", nargs="+", default=["hf", "vllm"], help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = arg_parser().parse_args(argv)
    if a.eval_worker:
        return eval_worker(Path(a.eval_worker), a.backends)
    checks = default_checks(a)
    if not a.dry_run:
        import torch

        if not torch.cuda.is_available():
            print(NO_CUDA, file=sys.stderr)
            return 2
    return run(checks, a.out, dry_run=a.dry_run)


if __name__ == "__main__":
    sys.exit(main())
