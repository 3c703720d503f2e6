"""Shared setup for the safety tests: one tiny world per session (tiny Llama + CLIP composed into
a Llava base, toy safety data, a VL adapter with non-zero LoRA and projector weights), and
recipe builders. Test modules import the fixture by name to use it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.models.tiny import build_tiny_parts
from lora_vl.recipe import build
from lora_vl.toy.data import corpus_texts, write_world_data
from lora_vl.toy.scale import SCALES
from lora_vl.train.config import LoraSettings, ModelConfig
from lora_vl.train.safety import SafetyRecipe
from lora_vl.train.stage import ensure_base, write_stage_manifest

FIXTURES = Path(__file__).parent / "fixtures" / "safety"


def make_vl_adapter(base: Path, out: Path, seed: int = 1) -> Path:
    """A VL adapter as `lora-vl adapt` writes one, with random (non-zero) LoRA B and projector."""
    model, processor = load_vlm(base, quantization="4bit")
    model = L.prepare_base(model, True, False)
    model = L.add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), train_projector=True, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.save_pretrained(out)
    write_stage_manifest(out, "vl_adapter", {}, base=str(base))
    return out


@pytest.fixture(scope="session")
def safety_world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("safety_world")
    files = write_world_data(root / "world", SCALES["test"])
    parts = build_tiny_parts(root / "models", corpus=corpus_texts(files), hidden=32, layers=2)
    base = ensure_base(build(ModelConfig, {"lm": str(parts["lm"]), "vision": str(parts["vision"]),
                                           "dtype": "float32", "base_dir": str(root / "base")}), root)
    vl = make_vl_adapter(base, root / "vl_adapter")
    return {"root": root, "base": base, "vl": vl, **files}


def sft_recipe(world: dict, out: Path, **optim) -> SafetyRecipe:
    return build(SafetyRecipe, {
        "output_dir": str(out), "parent": str(world["vl"]), "method": "sft",
        "model": {"base": str(world["base"]), "gradient_checkpointing": False},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "sft": {"data": {"sources": [{"format": "vlguard", "path": str(world["vlguard"])}], "max_length": 160},
                "optim": {"lr": 5e-3, "micro_batch_size": 8, "global_batch_size": 8, "max_steps": 6,
                          "warmup_ratio": 0.0, "scheduler": "constant_with_warmup", **optim}}})


def dpo_recipe(world: dict, out: Path, loss: str = "sigmoid", **optim) -> SafetyRecipe:
    sources = [{"format": "spa_vl", "path": str(world["spa_vl"]), "num_samples": 8},
               {"format": "pku_saferlhf", "path": str(world["pku_saferlhf"]), "num_samples": 4}]
    return build(SafetyRecipe, {
        "output_dir": str(out), "parent": str(world["vl"]), "method": "dpo",
        "model": {"base": str(world["base"]), "gradient_checkpointing": False},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "dpo": {"beta": 0.1, "loss": loss, "data": {"sources": sources, "max_length": 192},
                "optim": {"lr": 5e-3, "micro_batch_size": 4, "global_batch_size": 4, "max_steps": 3, **optim}}})


def copy_fixtures(dst: Path) -> Path:
    shutil.copytree(FIXTURES, dst)
    return dst
