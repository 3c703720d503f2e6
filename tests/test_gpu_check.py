"""bench/gpu_check.py (`make gpu-check`) on a CPU: the dry run, the no-CUDA exit, and the runner
with real subprocesses — a failing and an over-budget check are recorded and the others still
run; the planner's and bench_train's real JSON read into predicted vs measured."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gc = sys.modules["gpu_check"] = importlib.util.module_from_spec(_spec)  # registered first: it has dataclasses
_spec.loader.exec_module(gc)

TOP_KEYS = {"kind", "created", "finished", "dry_run", "device", "cuda", "versions", "budget_s", "wall_s", "ok",
            "checks"}
NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA even where a GPU is


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=NO_GPU,
                          cwd=REPO, timeout=120)


def test_dry_run_lists_each_check_with_its_budget_and_writes_them_skipped(tmp_path):
    out = tmp_path / "g.json"
    res = cli("--dry-run", "--out", str(out), "--train-budget", "99")
    assert res.returncode == 0, res.stderr
    rep = json.loads(out.read_text())
    assert TOP_KEYS <= set(rep) and rep["dry_run"] and rep["finished"] and rep["ok"]
    assert set(rep["versions"]) >= {"torch", "transformers", "bitsandbytes", "peft"}
    names = [c["name"] for c in rep["checks"]]
    assert names == ["plan-stage2-1x2048", "plan-stage2-4x2048-lean", "bench-train-llava7b", "generation-batched",
                     "eval-vllm"]
    assert all(c["status"] == "skipped" and c["reason"] == "dry run" for c in rep["checks"])
    budgets = {c["name"]: c["budget_s"] for c in rep["checks"]}
    assert budgets["bench-train-llava7b"] == 99 and rep["budget_s"] == sum(budgets.values())
    for c, mb in zip(rep["checks"][:2], (1, 4)):
        cmd = c["command"]
        assert "lora_vl.cli plan recipes/paper/adapt_llama2_chat_7b.yaml --stage 2" in cmd
        lean = (" model.frozen_dtype=compute model.trained_dtype=compute model.loss_chunk_tokens=1024"
                " model.offload_checkpoints=true") if mb == 4 else ""
        assert f"stage2.optim.micro_batch_size={mb} stage2.data.max_length=2048{lean} --measure" in cmd
        assert f"{c['name']:<24} {c['budget_s']:>5g} s  {cmd}" in res.stdout  # printed: name, budget, command
    assert "bench/bench_train.py --preset llava7b --json" in rep["checks"][2]["command"]
    assert "bench/bench_generation.py --device cuda" in rep["checks"][3]["command"]
    assert "--backends hf vllm" in rep["checks"][4]["command"]
    # the defaults end inside a device machine's 10-minute command
    assert sum(gc.BUDGETS[k] for k in ("plan", "plan", "train", "generation", "eval")) <= 9 * 60


def test_without_cuda_it_stops_at_once_with_one_line_and_exit_2(tmp_path):
    out = tmp_path / "g.json"
    res = cli("--out", str(out))
    assert res.returncode == 2
    assert res.stderr.strip() == gc.NO_CUDA and "CUDA GPU" in gc.NO_CUDA
    assert not out.exists()


def test_a_failing_and_an_over_budget_check_do_not_stop_the_others(tmp_path):
    out = tmp_path / "g.json"
    out.write_text("{}")  # a previous report: replaced by rename, never rewritten in place
    os.link(out, tmp_path / "previous")  # keeps its inode taken, so a rename shows as a new one
    fails = tmp_path / "fails.py"
    fails.write_text("print('about to fail'); raise SystemExit(1)\n")
    marker = tmp_path / "grandchild-ran"
    # the over-budget check leaves a grandchild that would write `marker` after 2 s: killed with it
    slow = tmp_path / "slow.py"
    grandchild = f"import time; time.sleep(2); open({str(marker)!r}, 'w')"
    slow.write_text(f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
                    f"print('spawned', flush=True)\ntime.sleep(60)\n")
    # the third check reads the report as rewritten after the first two
    reader = (f"import json; r = json.load(open({str(out)!r})); "
              f"print('seen', r['finished'], [c['status'] for c in r['checks']])")
    py = sys.executable
    checks = [gc.Check("fails", [py, str(fails)], 30), gc.Check("slow", [py, str(slow)], 1),
              gc.Check("reads-report", [py, "-c", reader], 30), gc.Check("last", [py, "-c", "print('ran last')"], 30)]
    t0 = time.time()
    assert gc.run(checks, out) == 1
    assert time.time() - t0 < 30  # the slow one was stopped at its budget
    rep = json.loads(out.read_text())
    assert out.stat().st_ino != (tmp_path / "previous").stat().st_ino  # atomic: written beside, renamed
    assert (tmp_path / "previous").read_text() == "{}" and not list(tmp_path.glob(".g.json.*"))
    assert TOP_KEYS <= set(rep) and rep["finished"] and not rep["ok"] and not rep["dry_run"]
    by = {c["name"]: c for c in rep["checks"]}
    assert [c["name"] for c in rep["checks"]] == ["fails", "slow", "reads-report", "last"]
    assert by["fails"]["status"] == "failed" and by["fails"]["returncode"] == 1
    assert by["fails"]["reason"] == "exit status 1" and "about to fail" in by["fails"]["output_tail"]
    assert by["slow"]["status"] == "timed_out" and by["slow"]["wall_s"] < 10
    assert "spawned" in by["slow"]["output_tail"]
    assert "seen False ['failed', 'timed_out']" in by["reads-report"]["output_tail"]
    assert by["last"]["status"] == "ok" and "ran last" in by["last"]["output_tail"]
    assert all({"command", "budget_s", "wall_s", "returncode"} <= set(c) for c in rep["checks"])
    time.sleep(2.5)
    assert not marker.exists()  # nothing the over-budget check started outlived it


def tiny_recipe(tmp_path: Path, base: Path) -> str:
    stage = {"data": {"sources": [{"format": "llava_json", "path": "unused.json"}], "max_length": 96},
             "optim": {"micro_batch_size": 2, "global_batch_size": 8, "optimizer": "paged_adamw_8bit"}}
    path = tmp_path / "adapt.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "model": {"base": str(base)},
                                    "lora": {"r": 8, "alpha": 16}, "stage1": stage, "stage2": stage}))
    return str(path)


@pytest.mark.slow  # runs the planner / an eval in subprocesses
def test_the_tools_real_json_reads_as_predicted_vs_measured(tiny_bases, tmp_path):
    """The default checks with CPU-sized commands (--command NAME=CMD): the planner on a tiny
    recipe, bench_train's smoke preset, a check that exits 1; the eval check needs a module."""
    work, out = tmp_path / "work", tmp_path / "g.json"
    py = sys.executable
    recipe = tiny_recipe(tmp_path, tiny_bases[("llama", "clip")])
    a = gc.arg_parser().parse_args([
        "--work", str(work),
        "--command", f"plan-stage2-1x2048={py} -m lora_vl.cli plan {recipe}"
                     f" --layers 1,2 --measure --measure-device cpu --json {work / 'plan_1x2048.json'}",
        "--command", f"plan-stage2-4x2048-lean={py} -c 'raise SystemExit(1)'",
        "--command", f"bench-train-llava7b={py} bench/bench_train.py --preset smoke --quant none "
                     f"--json {work / 'bench_train.json'}",
        "--command", f"generation-batched={py} bench/bench_generation.py --n 6 --batch-size 3 --max-new 4 "
                     f"--hidden 64 --layers 1 --json {work / 'generation.json'}"])
    checks = gc.default_checks(a)
    checks[4].needs = "no_such_module_for_gpu_check"  # deterministic, whether or not vLLM is installed
    work.mkdir()
    assert gc.run(checks, out) == 1
    by = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    plan = by["plan-stage2-1x2048"]
    assert plan["status"] == "ok", plan.get("output_tail")
    assert plan["predicted"]["max_memory_allocated_gib"] > 0 and plan["measured"]["tracked_peak_gib"] > 0
    assert plan["measured"]["device"] == "cpu" and plan["measured"]["micro_batch_s"] > 0
    assert abs(plan["comparison"]["memory_error"]) <= 0.10 and plan["comparison"]["memory_within_10pct"]
    assert plan["raw"]["prediction"]["allocator_bytes"] > 0  # the planner's own JSON, kept
    assert by["plan-stage2-4x2048-lean"]["status"] == "failed"
    train = by["bench-train-llava7b"]
    assert train["status"] == "ok", train.get("output_tail")
    assert train["measured"]["none"]["tokens_per_s"] > 0 and train["raw"]["preset"] == "smoke"
    assert train["measured"]["none"]["gradient_checkpointing"] is True  # the step it claims to measure
    gen = by["generation-batched"]
    assert gen["status"] == "ok", gen.get("output_tail")
    assert gen["measured"]["device"].startswith("CPU") and gen["measured"]["batched_items_per_s"] > 0
    assert gen["comparison"]["identical_outputs"] is True and gen["comparison"]["speedup"] > 0
    assert by["eval-vllm"]["status"] == "skipped"
    assert by["eval-vllm"]["reason"] == "no_such_module_for_gpu_check not installed"


def test_vllm_missing_skips_the_eval_check():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    c = gc.default_checks(gc.arg_parser().parse_args([]))[-1]
    r = gc.run_check(c)
    assert (c.name, r["status"], r["reason"]) == ("eval-vllm", "skipped", "vllm not installed")


@pytest.mark.slow  # runs the planner / an eval in subprocesses
def test_eval_worker_runs_the_hf_backend_on_a_tiny_llava(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--eval-worker", str(tmp_path / "e"), "--backends", "hf"],
                         capture_output=True, text=True, cwd=REPO, env=NO_GPU, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / "e" / "eval_check.json").read_text())
    hf = rec["backends"]["hf"]
    assert hf["returncode"] == 0 and hf["answers"] >= 5 and hf["answers_per_s"] > 0
    parsed = gc.parse_eval(rec)
    assert parsed["measured"]["hf"] is hf and not parsed["failed_parts"]
