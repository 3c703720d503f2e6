"""The study's training and merging runs, each through its stage's own Python API with the stage
recipe plus the study's overrides (output folder, seed, parent adapters, snapshots)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lora_vl.artifacts import atomic_dir
from lora_vl.data.dataset import read_sources
from lora_vl.errors import InputError
from lora_vl.handoff import make_manifest, read_manifest, write_manifest
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.merge.run import run as run_merge
from lora_vl.merge.sweep import INDEX, load_sweep_data, run_sweep
from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.recipe import build, load_recipe, read_yaml
from lora_vl.train.adapt import AdaptRecipe, run_adapt
from lora_vl.train.loop import Schedule
from lora_vl.train.safety import SafetyRecipe, run_safety


@dataclass
class VlRun:
    adapter: Path
    base: str
    projector: Path | None                 # the stage-1 projector (the mixed setting starts from it)
    snapshots: list[tuple[int, Path]]      # (step, adapter dir), in step order, from step 0


def snapshots_of(out: Path, fingerprint: str) -> list[tuple[int, Path]]:
    """Stage-2 snapshots written by this very run (same fingerprint as its adapter)."""
    found = []
    for p in (out / "snapshots" / "stage2").glob("step-*"):
        manifest = read_manifest(p, required=False)
        if manifest and manifest.get("fingerprint") == fingerprint:
            found.append((int(p.name.split("-", 1)[1]), p))
    return sorted(found)


def stage2_steps(recipe) -> int:
    """Optimizer steps stage 2 will run: the loop's own schedule over the mixture's records (records
    dropped as overlong at encoding time can make it a step or two fewer)."""
    return Schedule([0] * len(read_sources(recipe.stage2.data)), recipe.stage2.optim).total_steps


def train_adapt(path: str, out: Path, seed: int, snapshots: int, snapshot_every: int | None) -> VlRun:
    overrides = [f"output_dir={out}", f"stage2.optim.seed={seed}"]
    if read_yaml(path).get("stage1"):
        overrides.append(f"stage1.optim.seed={seed}")
    if snapshot_every is None:
        # rounded up, so that the last point is the final adapter (not a snapshot one step before it)
        snapshot_every = max(1, -(-stage2_steps(load_recipe(AdaptRecipe, path, overrides)) // snapshots))
    recipe = load_recipe(AdaptRecipe, path, [*overrides, f"stage2.optim.snapshot_every={snapshot_every}"])
    adapter = run_adapt(recipe)
    manifest = read_manifest(adapter)
    snaps = snapshots_of(out, manifest["fingerprint"])
    points = {step for step, _ in snaps} | {int(manifest["steps"])}  # the final adapter ends the curve
    if len(points) < 4:
        raise InputError(f"{path}: stage 2 ran {manifest['steps']} steps; at snapshot_every={snapshot_every} "
                         f"that makes {len(points)} point(s) on the ASR curve, the study needs 4 "
                         "(lower snapshot_every)")
    projector = out / "stage1" / "projector.safetensors"
    projector = projector if projector.is_file() else (Path(recipe.projector) if recipe.projector else None)
    step0 = out / "snapshots" / "stage2" / "step-0"
    if projector is not None and not (step0 / "adapter_config.json").is_file():
        start_adapter(recipe, str(manifest["base"]), projector, step0, manifest["fingerprint"])
    if projector is not None:
        snaps.insert(0, (0, step0))
    return VlRun(Path(adapter), str(manifest["base"]), projector, snaps)


def start_adapter(recipe, base: str, projector: Path, out: Path, fingerprint: str) -> Path:
    """Stage 2 at step 0 as an adapter: the stage-1 projector and a fresh LoRA (B = 0, so no change
    to the LM), built as stage 2 builds it before its first step: the start of the ASR curve."""
    model, _ = load_vlm(base, quantization="none")
    L.load_projector(model, projector)
    model = L.add_lora(model, recipe.lora, train_projector=True, seed=recipe.stage2.optim.seed)
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        write_manifest(tmp, make_manifest("vl_adapter_snapshot", {}, base=base, step=0, fingerprint=fingerprint,
                                          parents=[str(projector)]))
    return out


def train_mixed(path: str, out: Path, seed: int, projector: Path | None) -> Path:
    """The simultaneous setting, started from this seed's stage-1 projector (unless it has its own stage 1)."""
    overrides = [f"output_dir={out}", f"stage2.optim.seed={seed}"]
    if read_yaml(path).get("stage1"):
        overrides.append(f"stage1.optim.seed={seed}")
    elif projector is not None:
        overrides.append(f"projector={projector}")
    return Path(run_adapt(load_recipe(AdaptRecipe, path, overrides)))


def train_safety(path: str, out: Path, seed: int, parent: Path) -> tuple[str, Path]:
    """(method, adapter dir) of a post-hoc safety run on top of `parent`."""
    method = read_yaml(path).get("method")
    if method not in ("sft", "dpo"):
        raise InputError(f"{path}: method {method!r}; expected sft or dpo")
    recipe = load_recipe(SafetyRecipe, path, [f"output_dir={out}", f"parent={parent}", f"{method}.optim.seed={seed}"])
    return method, Path(run_safety(recipe))


def _merge_data(path: str, vl: Path, safety: Path, output: Path, extra: list[str]) -> dict:
    data, _ = load_sweep_data(path, [f"inputs.0.path={vl}", f"inputs.1.path={safety}", f"output={output}",
                                     "overwrite=true", *extra], [])
    if len(data.get("inputs") or []) != 2:
        raise InputError(f"{path}: inputs: the study merges exactly two adapters [VL, safety]; "
                         f"got {len(data.get('inputs') or [])}")
    data.pop("sweep", None)  # the study sets its own grid
    return data


def merge_sweep(spec, vl: Path, safety: Path, output: Path) -> list[tuple[float, Path]]:
    """ΔW_VL + λ ΔW_safety for every λ of the sweep: [(λ, adapter dir)]."""
    data = _merge_data(spec.recipe, vl, safety, output, ["method=sum"])
    out = run_sweep(data, {"inputs.1.weight": list(spec.weights)}, where=spec.recipe)
    index = json.loads((Path(out) / INDEX).read_text())
    return [(p["values"]["inputs.1.weight"], Path(p["path"])) for p in index["points"]]


def merge_dense(spec, vl: Path, safety: Path, output: Path, seed: int) -> Path:
    data = _merge_data(spec.recipe, vl, safety, output,
                       [f"method={spec.dense_method}", f"density={spec.density}", f"seed={seed}",
                        f"weights={json.dumps(list(spec.dense_weights))}"])
    return Path(run_merge(build(MergeRecipe, data, where=spec.recipe)))
