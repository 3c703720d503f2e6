"""Tiny random-init models of real architectures, built locally (no hub).

Tests and the offline default drive the real loading code with these: a byte-level BPE
tokenizer trained on a local corpus, causal LMs of the Llama / Qwen2 / Mistral classes, and
CLIP / SigLIP checkpoints saved exactly as hub checkpoints are (full dual-encoder models).
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from lora_vl.models.templates import TEMPLATES

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<|im_start|>", "<|im_end|>",
                  "<|user|>", "<|assistant|>", "<|system|>"]
# The chat format each tiny LM ships with, so every template is exercised.
ARCH_TEMPLATE = {"llama": "llama2", "mistral": "tulu2", "qwen2": "chatml"}
ARCH_CONFIG = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}

BASE_CORPUS = [
    "[INST] <<SYS>> [/INST] a red circle on a white background",
    "what color is the shape in the image? the shape is blue. describe the picture.",
    "I cannot help with that request. I'm sorry, but I can't assist with it.",
    "Sure, here is how to bake bread: mix flour, water and yeast, then bake it.",
]


def build_tokenizer(out_dir: str | Path, corpus: list[str] | None = None, vocab_size: int = 600,
                    arch: str = "llama") -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus`, add special tokens and the arch's chat template."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator((corpus or []) + BASE_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
    )
    fast.chat_template = TEMPLATES[ARCH_TEMPLATE[arch]]
    fast.save_pretrained(out_dir)
    return fast


def build_lm(out_dir: str | Path, tokenizer, arch: str = "llama", hidden: int = 64, layers: int = 2,
             heads: int = 4, kv_heads: int = 2, seed: int = 0) -> Path:
    """A random-init causal LM of a real architecture, saved as safetensors with its tokenizer."""
    if arch not in ARCH_CONFIG:
        raise ValueError(f"tiny LM arch {arch!r}: expected one of {sorted(ARCH_CONFIG)}")
    cfg = ARCH_CONFIG[arch](
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=(arch == "qwen2"),  # small Qwen2 models tie; exercise that path
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def build_vision(out_dir: str | Path, kind: str = "clip", hidden: int = 32, layers: int = 2,
                 image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    """A random-init CLIP or SigLIP dual encoder with its image processor, as on the hub."""
    vision = dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                  num_attention_heads=2, image_size=image_size, patch_size=patch_size)
    text = dict(vocab_size=64, hidden_size=hidden, intermediate_size=hidden * 2,
                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    if kind == "clip":
        model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=hidden))
        proc = CLIPImageProcessor(size={"shortest_edge": image_size},
                                  crop_size={"height": image_size, "width": image_size})
    elif kind == "siglip":
        model = SiglipModel(SiglipConfig(vision_config=vision, text_config=text))
        proc = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    else:
        raise ValueError(f"tiny vision kind {kind!r}: expected 'clip' or 'siglip'")
    model.save_pretrained(out_dir)
    proc.save_pretrained(out_dir)
    return Path(out_dir)


def build_tiny_parts(root: str | Path, arch: str = "llama", vision: str = "clip",
                     corpus: list[str] | None = None, hidden: int = 64, layers: int = 2,
                     seed: int = 0) -> dict[str, Path]:
    """Tokenizer + LM + vision encoder under `root`; returns {'lm': path, 'vision': path}."""
    root = Path(root)
    tok = build_tokenizer(root / "tokenizer", corpus=corpus, arch=arch)
    lm = build_lm(root / f"lm-{arch}", tok, arch=arch, hidden=hidden, layers=layers, seed=seed)
    vis = build_vision(root / f"vision-{vision}", kind=vision, seed=seed)
    return {"lm": lm, "vision": vis}
