"""Shared helpers for the evaluation tests: a tiny Llava checkpoint (+ LoRA adapter) built locally."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lora_vl.handoff import write_manifest
from lora_vl.models.compose import ComposeSpec, compose, save_composed
from lora_vl.models.tiny import build_tiny_parts

LLAVA_LM_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def build_world(root: Path) -> dict[str, Path]:
    parts = build_tiny_parts(root / "parts", arch="llama", vision="clip")
    model, processor = compose(ComposeSpec(lm=str(parts["lm"]), vision=str(parts["vision"]), dtype="float32"))
    llava = root / "llava"
    save_composed(model, processor, llava, manifest={"kind": "base", "lm": str(parts["lm"])})
    adapter = make_adapter(model, root / "adapter", base=str(llava), seed=1)
    return {"lm": Path(parts["lm"]), "llava": llava, "adapter": adapter}


def make_adapter(model, out: Path, base: str, seed: int) -> Path:
    """A PEFT LoRA on the language model with nonzero B (fresh LoRA is a no-op), + manifest."""
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=LLAVA_LM_TARGETS))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    pm.save_pretrained(str(out))
    pm.unload()  # leave the shared model as it was
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base
    cfg_path.write_text(json.dumps(cfg))
    write_manifest(out, {"kind": "test_adapter", "base": base})
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> dict[str, Path]:
    return build_world(tmp_path_factory.mktemp("eval_world"))


def spec(reader: str, source, **kw):
    from lora_vl.evaluation.suite import BenchmarkSpec

    return BenchmarkSpec(name=kw.pop("name", reader), reader=reader, source=str(source), **kw)


def write_parquet(path: Path, rows: list[dict], image_list: bool = False) -> Path:
    """A hub-layout parquet file (datasets Image feature), as lmms-lab hosts MME/POPE/SEED/ScienceQA."""
    import datasets

    ds = datasets.Dataset.from_list(rows)
    feature = datasets.Sequence(datasets.Image()) if image_list else datasets.Image()
    ds = ds.cast_column("image", feature)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def tiny_png(path: Path, color=(255, 0, 0)) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)
    return str(path)
