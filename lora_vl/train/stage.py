"""What every training stage shares: the base checkpoint, data provenance, artifact checks."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Callable

from lora_vl import distributed as dist
from lora_vl.artifacts import atomic_dir, fingerprint_files, fingerprint_obj
from lora_vl.errors import InputError
from lora_vl.handoff import check_output, make_manifest, read_manifest, write_manifest
from lora_vl.lock import read_lock, verify_data_file, verify_data_folder
from lora_vl.data.config import DataConfig
from lora_vl.models.compose import ComposeSpec, compose, save_composed
from lora_vl.recipe import describe, load_recipe
from lora_vl.train.config import DEFAULTS_CHANGED, ModelConfig
from lora_vl.train.loop import LoopResult


def compose_spec(model: ModelConfig) -> dict:
    keys = ("lm", "vision", "lm_revision", "vision_revision", "chat_template",
            "vision_feature_layer", "vision_feature_select_strategy", "dtype")
    return {k: getattr(model, k) for k in keys}


def local_stamp(path) -> str | None:
    """Identity of a local file or folder: names, sizes and modification times (cheap, and
    changed by any rebuild). A hub id is pinned by its revision instead, so it stamps as None."""
    if path is None or not Path(path).exists():
        return None
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return fingerprint_obj([(str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size,
                             f.stat().st_mtime_ns) for f in files])


def check_run_output(command: str, output_dir: str, model: ModelConfig, sections: dict[str, DataConfig],
                     inputs: list[tuple[str, str | None]] = ()) -> None:
    """A training run's output folder overlaps none of its inputs: the base or the LM and encoder
    it is composed from, each data file and image folder, and `inputs` (parent, projector)."""
    given = [("model.base", model.base), ("model.lm", model.lm), ("model.vision", model.vision), *inputs]
    for name, data in sections.items():
        for i, src in enumerate(data.sources):
            given += [(f"{name}.data.sources[{i}].path", src.path),
                      (f"{name}.data.sources[{i}].image_folder", src.image_folder)]
    check_output(output_dir, given, command=command)


def ensure_base(model: ModelConfig, output_dir: Path) -> Path:
    """The Llava checkpoint a run trains on: given, or composed once and reused."""
    if model.base is not None:
        return Path(model.base) if Path(model.base).exists() else model.base
    base_dir = Path(model.base_dir) if model.base_dir else output_dir / "base"
    spec = compose_spec(model)
    wanted = {**spec, "sources": {"lm": local_stamp(model.lm), "vision": local_stamp(model.vision)}}
    manifest = read_manifest(base_dir, required=False)
    if manifest is not None:
        made = manifest.get("compose")
        if made != wanted:
            raise InputError(f"{base_dir}: holds a Llava composed from {made}, but the recipe asks for "
                             f"{wanted} (a local LM or encoder that was rebuilt counts as different); "
                             "set model.base_dir to another folder or remove it")
        return base_dir
    check_output(base_dir, [("model.lm", model.lm), ("model.vision", model.vision)], command="compose")
    if dist.is_main():
        llava, processor = compose(ComposeSpec(**spec))
        save_composed(llava, processor, base_dir, make_manifest("base", recipe={}, compose=wanted))
        print(f"composed Llava base checkpoint at {base_dir}")
    dist.barrier()
    return base_dir


def data_provenance(data: DataConfig) -> list[dict]:
    out = []
    lock = read_lock()
    for src in data.sources:
        entry = {"format": src.format, "path": src.path, "revision": src.revision}
        if src.image_folder and Path(src.image_folder).is_dir():
            verify_data_folder(src.image_folder, lock)
        if Path(src.path).is_file():
            # the JSON (image bytes not hashed); a fetched file is hashed once, against the lock
            entry["sha256"] = verify_data_file(src.path, lock) or fingerprint_files([src.path])
        elif Path(src.path).is_dir():
            entry["stamp"] = local_stamp(src.path)  # a saved dataset folder
        out.append(entry)
    return out


def finished(out_dir: Path, fingerprint: str) -> bool:
    """True if `out_dir` holds this exact run's result; error if it holds another run's."""
    manifest = read_manifest(out_dir, required=False)
    if manifest is None:
        return False
    if manifest.get("fingerprint") != fingerprint:
        raise InputError(f"{out_dir}: already holds the result of a different recipe; "
                         f"choose another output_dir or remove it ({DEFAULTS_CHANGED})")
    return True


def pixel_dtype(model):
    """Pixels enter the vision tower in its own dtype (fp32 after k-bit preparation)."""
    return next(p for n, p in model.named_parameters() if ".vision_tower." in n).dtype


# Keys added after runs existed, at the value that computes what those runs computed: left out of the
# fingerprint at that value, so a finished or checkpointed run is still recognised as itself. For
# loss_chunk_tokens and frozen_dtype that is no longer the default (`config.DEFAULTS_CHANGED`).
# Dropped at any depth (a data source's id_pattern sits in a list inside the stage's data).
SILENT_DEFAULTS = {"loss_chunk_tokens": 0, "id_pattern": None, "frozen_dtype": "float32", "trained_dtype": "float32",
                   "offload_checkpoints": False}


def _silenced(value):
    if isinstance(value, dict):
        return {k: _silenced(v) for k, v in value.items()
                if not (k in SILENT_DEFAULTS and v == SILENT_DEFAULTS[k])}
    if isinstance(value, list):
        return [_silenced(v) for v in value]
    return value


def _fingerprinted(part):
    return _silenced(dataclasses.asdict(part)) if dataclasses.is_dataclass(part) else part


def stage_fingerprint(*parts) -> str:
    return fingerprint_obj([_fingerprinted(p) for p in parts])


def write_stage_manifest(out_dir: Path, kind: str, recipe: dict, **fields) -> None:
    write_manifest(out_dir, make_manifest(kind, recipe, **fields))


def write_result(out: Path, write: Callable[[Path], None]) -> Path:
    """Rank 0 writes the folder `out` atomically (`write(tmp)` fills it); every process waits."""
    if dist.is_main():
        with atomic_dir(out, overwrite=True) as tmp:
            write(tmp)
    dist.barrier()
    return out


def run_record(res: LoopResult, data) -> dict:
    """The manifest fields every training stage records about its run."""
    return {"data_report": data.report.as_dict(), "final_loss": res.final_loss, "steps": res.steps,
            "skipped_steps": res.skipped_steps, "resumed_from": res.resumed_from, "tokens": res.tokens,
            "seconds": res.seconds}


def stage_main(argv: list[str], *, prog: str, doc: str, recipe_cls, run, example: str, override: str,
               done: str) -> int:
    """The command line of a training stage: recipe + overrides, --help listing every key."""
    ap = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, description=doc,
        epilog="recipe keys (override any with key.sub=value):\n" + describe(recipe_cls))
    ap.add_argument("recipe", help=f"YAML recipe, e.g. {example}")
    ap.add_argument("overrides", nargs="*", help=f"key=value overrides, e.g. {override}")
    a = ap.parse_args(argv)
    result = run(load_recipe(recipe_cls, a.recipe, a.overrides))
    if dist.is_main():
        print(f"{done} {result}")
    return 0
