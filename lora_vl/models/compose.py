"""Compose a standard `LlavaForConditionalGeneration` from a causal LM + CLIP/SigLIP encoder.

The result is an ordinary Llava checkpoint (config, safetensors, processor) with a fresh
2-layer GELU projector, so everything downstream — QLoRA loading, PEFT adapters, vLLM,
lmms-eval — sees the standard architecture. Transformers has no builder for this (it only
loads finished Llava checkpoints), hence this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    SiglipVisionModel,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector
from transformers.utils import logging as hf_logging

from lora_vl.artifacts import atomic_dir
from lora_vl.models.templates import resolve_template
from lora_vl.errors import InputError
from lora_vl.handoff import write_manifest
from lora_vl.models.load import NO_HUB_KERNELS, model_config

IMAGE_TOKEN = "<image>"
VISION_CLASSES = {"clip": CLIPVisionModel, "clip_vision_model": CLIPVisionModel,
                  "siglip": SiglipVisionModel, "siglip_vision_model": SiglipVisionModel}


@dataclass
class ComposeSpec:
    lm: str
    vision: str
    lm_revision: str | None = None
    vision_revision: str | None = None
    chat_template: str = "auto"
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "auto"
    dtype: str = "bfloat16"
    projector_seed: int = 0


def vision_family(vision_config) -> str:
    return "siglip" if vision_config.model_type.startswith("siglip") else "clip"


def select_strategy(requested: str, family: str) -> str:
    """LLaVA-1.5 drops CLIP's CLS token ('default'); SigLIP has none, so it keeps all ('full')."""
    if requested == "auto":
        return "full" if family == "siglip" else "default"
    if requested == "default" and family == "siglip":
        raise InputError("vision_feature_select_strategy 'default' drops a CLS token, but SigLIP has "
                         "none; use 'full' or 'auto'")
    return requested


def num_image_tokens(vision_config, strategy: str) -> int:
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    has_cls = vision_family(vision_config) == "clip"
    return patches + (1 if has_cls and strategy == "full" else 0)


def load_vision_tower(vision: str, revision: str | None, dtype) -> torch.nn.Module:
    cfg = model_config(vision, revision, role="vision encoder")
    cls = VISION_CLASSES.get(cfg.model_type)
    if cls is None:
        raise InputError(f"vision encoder {vision!r}: model_type {cfg.model_type!r} is not supported; "
                         f"expected one of {sorted(VISION_CLASSES)}")
    # hub CLIP/SigLIP checkpoints are dual encoders: the text half is dropped on purpose, so
    # silence transformers' report of its "unexpected" weights (real problems still raise)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(vision, revision=revision, dtype=dtype, use_safetensors=True, **NO_HUB_KERNELS)
    finally:
        hf_logging.set_verbosity(verbosity)


def add_image_token(tokenizer, model) -> int:
    """Give the tokenizer an `<image>` token (and the LM a row for it) if it has none."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        old = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > old:
            # mean init: the row is never read (image features replace it) but must be finite
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def compose(spec: ComposeSpec) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    dtype = getattr(torch, spec.dtype)
    model_config(spec.lm, spec.lm_revision, role="language model")  # a clear error before any download
    tokenizer = AutoTokenizer.from_pretrained(spec.lm, revision=spec.lm_revision)
    tokenizer.chat_template = resolve_template(spec.chat_template, tokenizer)
    lm = AutoModelForCausalLM.from_pretrained(spec.lm, revision=spec.lm_revision, dtype=dtype,
                                              use_safetensors=True, **NO_HUB_KERNELS)
    image_token_id = add_image_token(tokenizer, lm)
    vision = load_vision_tower(spec.vision, spec.vision_revision, dtype)
    family = vision_family(vision.config)
    strategy = select_strategy(spec.vision_feature_select_strategy, family)
    n_tokens = num_image_tokens(vision.config, strategy)
    config = LlavaConfig(
        vision_config=vision.config.to_dict(), text_config=lm.config.to_dict(),
        image_token_index=image_token_id, image_seq_length=n_tokens, projector_hidden_act="gelu",
        vision_feature_layer=spec.vision_feature_layer, vision_feature_select_strategy=strategy,
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
    )
    config.text_config.vocab_size = lm.get_input_embeddings().weight.shape[0]
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    llava.model.vision_tower = vision
    llava.model.language_model = lm.model
    llava.lm_head = lm.lm_head
    torch.manual_seed(spec.projector_seed)
    llava.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    llava.to(dtype)
    llava.eval()
    image_processor = AutoImageProcessor.from_pretrained(spec.vision, revision=spec.vision_revision)
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=vision.config.patch_size,
        vision_feature_select_strategy=strategy, chat_template=tokenizer.chat_template,
        num_additional_image_tokens=1 if family == "clip" else 0,
    )
    check_image_tokens(llava, processor)
    return llava, processor


@torch.no_grad()
def check_image_tokens(model, processor) -> None:
    """The encoder must yield exactly image_seq_length features per image."""
    size = model.config.vision_config.image_size
    pixels = torch.zeros(1, 3, size, size, dtype=model.dtype, device=model.device)
    feats = model.model.get_image_features(
        pixel_values=pixels, vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
    ).pooler_output[0]
    if feats.shape[0] != model.config.image_seq_length:
        raise ValueError(f"vision encoder gives {feats.shape[0]} image features, config expects "
                         f"{model.config.image_seq_length}")


def save_composed(model, processor, out_dir: str | Path, manifest: dict) -> None:
    with atomic_dir(out_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        write_manifest(tmp, manifest)
