"""Small builders shared by the training tests."""
from __future__ import annotations

from pathlib import Path

import yaml
from huggingface_hub import ModelCard


def adapt_recipe(tmp: Path, parts: dict, world: dict, **over) -> Path:
    """A tiny adapt recipe over locally built parts and the toy world data; returns its path."""
    stage = lambda src, lr: {  # noqa: E731
        "data": {"sources": [{"format": "llava_json", "path": str(world[src]), "num_samples": 8}],
                 "max_length": 128},
        "optim": {"lr": lr, "micro_batch_size": 4, "global_batch_size": 4, "max_steps": 4,
                  "save_every": 2, "group_by_length": True},
    }
    recipe = {
        "output_dir": str(tmp / "run"),
        "model": {"lm": str(parts["lm"]), "vision": str(parts["vision"]), "dtype": "float32",
                  "base_dir": str(tmp / "base")},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "stage1": stage("pretrain", 1e-3),
        "stage2": stage("instruct", 1e-3),
    }
    for key, value in over.items():
        node = recipe
        *path, last = key.split("__")
        for p in path:
            node = node[p]
        node[last] = value
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def assert_model_card(directory: str | Path, library: str = "peft") -> ModelCard:
    """The directory's README.md is a model card the Hub's parser loads, in the kit's form."""
    card = ModelCard.load(Path(directory) / "README.md")
    assert card.data.library_name == library and "lora_vl" in card.data.tags, card.data
    assert "## Provenance" in card.text
    return card
