"""A run killed with SIGKILL mid-training continues from its checkpoint, not from zero, and ends
exactly where an uninterrupted run ends: the same adapter bytes and the same optimizer state."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from lora_vl.models.load import load_vlm
from lora_vl.models.lora import attach_adapters
from tests.helpers import adapt_recipe

pytestmark = pytest.mark.slow  # trains, kills the process, trains again


def run(recipe, **kw):
    return subprocess.Popen([sys.executable, "-m", "lora_vl.cli", "adapt", str(recipe)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sigkill_then_rerun_resumes(tiny_parts, toy_world, tmp_path):
    recipe = adapt_recipe(tmp_path, tiny_parts[("llama", "clip")], toy_world,
                          stage1__optim__max_steps=2, stage2__optim__max_steps=40,
                          stage2__optim__save_every=3,
                          lora__dropout=0.1)  # random draws in every step: the resumed run must redraw them
    ckpts = tmp_path / "run/checkpoints/stage2"
    proc = run(recipe)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in ckpts.glob("step-*") if (p / "state.json").exists()] if ckpts.exists() else []
        if done:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before it could be killed:\n" + proc.stdout.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run/adapter").exists()
    finished = run(recipe)
    out, _ = finished.communicate(timeout=600)
    assert finished.returncode == 0, out
    assert "stage 1 already complete" in out
    manifest = json.loads((tmp_path / "run/adapter/manifest.json").read_text())
    assert manifest["resumed_from"] >= 3 and manifest["resumed_from"] % 3 == 0
    assert manifest["steps"] == 40
    assert f"resumed from checkpoint step {manifest['resumed_from']}" in out
    model, _ = load_vlm(tmp_path / "base", quantization="4bit")
    attach_adapters(model, [tmp_path / "run/adapter"])

    straight = yaml.safe_load(recipe.read_text())
    straight["output_dir"] = str(tmp_path / "straight")
    (tmp_path / "straight.yaml").write_text(yaml.safe_dump(straight))
    uninterrupted = run(tmp_path / "straight.yaml")
    out, _ = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, out
    weights = "adapter/adapter_model.safetensors"
    assert (tmp_path / "run" / weights).read_bytes() == (tmp_path / "straight" / weights).read_bytes()
    last = "checkpoints/stage2/step-40/optimizer.pt"
    resumed, straight_state = (torch.load(tmp_path / d / last, weights_only=True)["optimizer"]["state"]
                               for d in ("run", "straight"))
    assert resumed.keys() == straight_state.keys()
    for k in resumed:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(resumed[k][name], straight_state[k][name]), (k, name)
