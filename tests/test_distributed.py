"""Data parallelism on CPU (gloo): 2 processes launched as `torchrun` (what `accelerate launch`
uses) train the same adapter as 1 process with the same global batch, resume from each other's
checkpoints, and evaluate to the same results."""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from eval_helpers import FIXTURES, tiny_world  # noqa: F401  (session fixture)
from safetensors.torch import load_file

from tests.helpers import adapt_recipe

pytestmark = pytest.mark.slow  # several training processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lora_vl(args: list[str], processes: int = 1) -> str:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_addr", "127.0.0.1", "--master_port", str(free_port())] if processes > 1 else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    res = subprocess.run([*launcher, "-m", "lora_vl.cli", *args], capture_output=True, text=True, env=env,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def recipe(tmp_path, tiny_parts, toy_world, name: str):
    path = adapt_recipe(tmp_path, tiny_parts[("llama", "clip")], toy_world, stage1=None)
    r = yaml.safe_load(path.read_text())
    r["output_dir"] = str(tmp_path / name)
    r["lora"]["dropout"] = 0.1  # randomness in every forward: each micro-batch's draw must not depend on N
    r["stage2"]["optim"].update(micro_batch_size=2, global_batch_size=4, max_steps=3, save_every=1,
                                keep_checkpoints=5, lr=5e-3)
    out = tmp_path / f"{name}.yaml"
    out.write_text(yaml.safe_dump(r))
    return out


def adapter(run_dir):
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def assert_same_adapter(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_two_processes_train_the_one_process_adapter_and_resume_across_n(tiny_parts, toy_world, tmp_path):
    one = recipe(tmp_path, tiny_parts, toy_world, "one")
    two = recipe(tmp_path, tiny_parts, toy_world, "two")
    lora_vl(["adapt", str(one)])
    log = lora_vl(["adapt", str(two)], processes=2)
    assert log.count("VL adapter written to") == 1  # rank 0 reports; the other process stays quiet
    a1, a2 = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    assert any(not torch.equal(a1[k], torch.zeros_like(a1[k])) for k in a1 if "lora_B" in k)  # it trained
    assert_same_adapter(a1, a2)
    manifest = json.loads((tmp_path / "two/adapter/manifest.json").read_text())
    assert manifest["steps"] == 3 and manifest["data_report"]["used"]

    # a 2-process run's checkpoint resumes in 1 process: drop the result and the last checkpoint
    shutil.rmtree(tmp_path / "two/adapter")
    shutil.rmtree(tmp_path / "two/checkpoints/stage2/step-3")
    log = lora_vl(["adapt", str(two)])
    assert "resumed from checkpoint step 2" in log
    assert_same_adapter(a1, adapter(tmp_path / "two"))


def test_two_process_eval_gives_the_one_process_results(tiny_world, tmp_path):
    suite = {"name": "ddp", "generation": {"batch_size": 2, "max_new_tokens": 6},
             "judges": [{"name": "kw", "kind": "refusal"}],
             "benchmarks": [{"name": "xstest", "reader": "xstest", "source": str(FIXTURES / "xstest"),
                             "subset": "all", "judges": ["kw"]},
                            {"name": "mmb", "reader": "mmbench", "source": str(FIXTURES / "mmbench")},
                            {"name": "figstep", "reader": "figstep", "source": str(FIXTURES / "figstep")}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    args = ["eval", str(path), "--model", str(tiny_world["llava"]), "--adapter", str(tiny_world["adapter"])]
    lora_vl([*args, "--out", str(tmp_path / "one")])
    lora_vl([*args, "--out", str(tmp_path / "two")], processes=2)
    r1, r2 = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert r1["benchmarks"] == r2["benchmarks"] and r1["summary"] == r2["summary"]
    cached = [json.loads(line) for line in (tmp_path / "two/generations.jsonl").read_text().splitlines()]
    assert len(cached) == sum(b["n_items"] for b in r2["benchmarks"])  # every answer once, shards merged
    assert not list((tmp_path / "two").glob("generations.jsonl.rank*"))
