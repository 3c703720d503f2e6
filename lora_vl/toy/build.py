"""Build the toy world once per (scale, seed): data, tokenizer, pretrained LM, aligned chat LM,
vision encoder, benchmarks, judge knowledge; a manifest with settings, timings and counts.

Idempotent: a world already built with the same settings is reused (`force` rebuilds). The
build happens in a temporary folder renamed into place, so a killed build leaves no half world.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from lora_vl.artifacts import atomic_dir, atomic_write_json, fingerprint_obj
from lora_vl.handoff import MANIFEST, make_manifest, write_manifest
from lora_vl.toy.data import corpus_texts, write_world_data
from lora_vl.toy.lm import align, build_tokenizer_and_lm, pretrain
from lora_vl.toy.scale import SCALES
from lora_vl.toy.space import Ledger, make_split
from lora_vl.toy.vision import train_vision

WORLD_VERSION = 4  # bump when what a world contains changes (invalidates cached worlds)
MODELS = {"lm": "models/lm", "lm_pretrained": "models/lm-pretrained", "vision": "models/vision"}


def world_settings(scale: str, seed: int) -> dict:
    return {"world_version": WORLD_VERSION, "scale": SCALES[scale].as_dict(), "seed": seed}


def is_built(out: Path, settings: dict) -> bool:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("settings") == settings
    except json.JSONDecodeError:
        return False


def build_world(out: str | Path = "outputs/toy/world", scale: str = "full", seed: int = 0,
                force: bool = False, log=print) -> Path:
    out = Path(out)
    settings = world_settings(scale, seed)
    if not force and is_built(out, settings):
        log(f"toy world already built with these settings: {out}")
        return out
    sc = SCALES[scale]
    with atomic_dir(out, overwrite=True) as tmp:
        times, t0 = {}, time.time()
        files = write_world_data(tmp, sc, seed)
        times["data"] = time.time() - t0

        t = time.time()
        pre_dir = build_tokenizer_and_lm(tmp / MODELS["lm_pretrained"], corpus_texts(files), sc, seed)
        pretrain_info = pretrain(pre_dir, files["lm_corpus"], tmp / ".work" / "pretrain", sc, seed)
        times["lm_pretrain"] = time.time() - t

        t = time.time()
        shutil.copytree(pre_dir, tmp / MODELS["lm"])
        align_info = align(tmp / MODELS["lm"], files["lm_align"], files["lm_corpus"], tmp / ".work" / "align", sc, seed)
        times["lm_align"] = time.time() - t

        t = time.time()
        split, used = make_split(seed), Ledger()
        vision_info = train_vision(tmp / MODELS["vision"], split, used, sc, seed)
        split.check(used.train, set())  # the encoder saw training cells only
        times["vision"] = time.time() - t
        shutil.rmtree(tmp / ".work")

        times["total"] = time.time() - t0
        write_manifest(tmp, make_manifest(
            "toy_world", recipe={}, settings=settings, fingerprint=fingerprint_obj(settings),
            seconds={k: round(v, 1) for k, v in times.items()},
            paths={**MODELS, **{k: str(v.relative_to(tmp)) for k, v in files.items()}},
            counts=_counts(files), training={"lm_pretrain": pretrain_info, "lm_align": align_info,
                                             "vision": vision_info},
            quality=None))
    log(f"toy world built in {times['total']:.0f}s: {out}")
    return out


def _counts(files: dict[str, Path]) -> dict[str, int]:
    out = {}
    for k, p in files.items():
        if p.suffix == ".jsonl":
            out[k] = len(p.read_text().splitlines())
        elif p.suffix == ".json" and k not in ("knowledge", "splits"):
            out[k] = len(json.loads(p.read_text()))
    return out


def record_quality(world: str | Path, quality: dict) -> None:
    """Write the measured quality numbers (bench/bench_toy_world.py) into the world's manifest."""
    path = Path(world) / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["quality"] = quality
    atomic_write_json(path, manifest)
