"""`lora-vl toy`: build the offline toy world (tiny LM + vision encoder + synthetic data)."""
from __future__ import annotations

import argparse
from pathlib import Path

from lora_vl.artifacts import atomic_dir, fingerprint_obj
from lora_vl.handoff import MANIFEST, make_manifest, write_manifest
import shutil

from lora_vl.models.tiny import build_tiny_parts
from lora_vl.toy.align import align_lm
from lora_vl.toy.safety_world import build_safety_data, safety_corpus
from lora_vl.toy.world import build_world_data, corpus


def build_world(out: str | Path, arch: str = "llama", vision: str = "clip", hidden: int = 64,
                layers: int = 2, seed: int = 0, force: bool = False) -> Path:
    """Idempotent: an existing world built with the same settings is reused."""
    out = Path(out)
    settings = {"arch": arch, "vision": vision, "hidden": hidden, "layers": layers, "seed": seed,
                "safety": 1, "data_version": 2}  # bump data_version when the world's data changes
    if (out / MANIFEST).exists() and not force:
        import json

        if json.loads((out / MANIFEST).read_text()).get("settings") == settings:
            return out
    with atomic_dir(out, overwrite=True) as tmp:
        files = build_world_data(tmp / "data", seed=seed)
        build_safety_data(tmp / "safety", tmp / "safety" / "images")
        parts = build_tiny_parts(tmp / "models", arch=arch, vision=vision, corpus=corpus(files) + safety_corpus(),
                                 hidden=hidden, layers=layers, seed=seed)
        loss = align_lm(parts["lm"], files["align"], tmp / "align", seed=seed)
        shutil.rmtree(tmp / "align")
        write_manifest(tmp, make_manifest("toy_world", recipe={}, settings=settings,
                                          fingerprint=fingerprint_obj(settings), align_loss=loss))
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lora-vl toy", description=__doc__)
    ap.add_argument("--out", default="outputs/toy/world", help="where to build the world")
    ap.add_argument("--arch", default="llama", choices=["llama", "qwen2", "mistral"])
    ap.add_argument("--vision", default="clip", choices=["clip", "siglip"])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if it exists")
    a = ap.parse_args(argv)
    out = build_world(a.out, a.arch, a.vision, a.hidden, a.layers, a.seed, a.force)
    print(f"toy world ready at {out}")
    return 0
