"""A run killed with SIGKILL mid-training continues from its checkpoint, not from zero."""
import json
import os
import signal
import subprocess
import sys
import time

from lora_vl.models.load import attach_adapters, load_vlm
from tests.helpers import adapt_recipe


def run(recipe, **kw):
    return subprocess.Popen([sys.executable, "-m", "lora_vl.cli", "adapt", str(recipe)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sigkill_then_rerun_resumes(tiny_parts, toy_world, tmp_path):
    recipe = adapt_recipe(tmp_path, tiny_parts[("llama", "clip")], toy_world,
                          stage1__optim__max_steps=2, stage2__optim__max_steps=40,
                          stage2__optim__save_every=3)
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
