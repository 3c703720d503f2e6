"""Shared fixtures: tiny models of real architectures, built once per session, offline."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
torch.set_num_threads(1)

COMBOS = [("llama", "clip"), ("qwen2", "siglip"), ("mistral", "clip"), ("llama", "siglip")]


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory):
    """{(arch, vision): {'lm': path, 'vision': path}} for every combination tested."""
    from lora_vl.models.tiny import build_tiny_parts
    from lora_vl.toy.data import corpus_texts, write_world_data
    from lora_vl.toy.scale import SCALES

    root = tmp_path_factory.mktemp("tiny")
    texts = corpus_texts(write_world_data(root / "world", SCALES["test"]))
    return {(a, v): build_tiny_parts(root / f"{a}-{v}", arch=a, vision=v, corpus=texts)
            for a, v in COMBOS}


@pytest.fixture(scope="session")
def tiny_bases(tiny_parts, tmp_path_factory):
    """Composed Llava checkpoints (fp32) for every combination."""
    from lora_vl.models.compose import ComposeSpec, compose, save_composed

    root = tmp_path_factory.mktemp("bases")
    out = {}
    for (a, v), parts in tiny_parts.items():
        model, proc = compose(ComposeSpec(lm=str(parts["lm"]), vision=str(parts["vision"]), dtype="float32"))
        save_composed(model, proc, root / f"{a}-{v}", {"kind": "base"})
        out[(a, v)] = root / f"{a}-{v}"
    return out


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory):
    """The toy world's data files at test scale (no models): LLaVA JSON stage-1/2 data
    ('pretrain', 'instruct', images in data/images/), safety data, benchmarks (see FILES)."""
    from lora_vl.toy.data import write_world_data
    from lora_vl.toy.scale import SCALES

    return write_world_data(tmp_path_factory.mktemp("world"), SCALES["test"])


@pytest.fixture(scope="session")
def shape(tiny_bases):
    """The planner's shape of the tiny Llama + CLIP Llava (the planner's and the lean-memory tests)."""
    from lora_vl.plan.shapes import base_shape
    return base_shape(str(tiny_bases[("llama", "clip")]))
