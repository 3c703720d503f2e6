"""Load a Llava checkpoint (local dir or hub id) for training or inference, 4-bit or 16-bit.

Only the language model is quantized (NF4, double quant); the vision tower, projector and
lm_head stay in the compute dtype. `llm_int8_skip_modules` needs full module paths — short
names are silently ignored and the tower would be quantized (see environment.md).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig,
                          LlavaForConditionalGeneration, LlavaProcessor)

from lora_vl import distributed as dist
from lora_vl.errors import InputError

# Full module paths: bitsandbytes silently ignores short names (environment.md).
SKIP_QUANT = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def skips_quantization(module_name: str) -> bool:
    """Whether a module stays 16-bit under the kit's 4-bit policy (vision tower, projector, lm_head)."""
    return any(module_name == p or module_name.startswith(p + ".") for p in SKIP_QUANT)


def default_device() -> torch.device:
    """This process's device: its GPU under a multi-process launcher, else cuda or cpu."""
    return dist.state().device


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that have it; fp32 on CPU (bf16 matmuls there are slow and inexact)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.float32


def attn_implementation(device: torch.device) -> str:
    """flash-attn when installed on a GPU (optional extra), else PyTorch's sdpa."""
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def bnb_config(dtype: torch.dtype) -> BitsAndBytesConfig:
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype,
                              llm_int8_skip_modules=SKIP_QUANT)


def model_config(name: str, revision: str | None = None, role: str = "model"):
    """A model's config, or a clear error naming the model: a local folder without a readable
    config, or a hub id the hub cannot serve (offline, gated, misspelled, wrong revision)."""
    try:
        return AutoConfig.from_pretrained(str(name), revision=revision)
    except (OSError, ValueError) as e:
        if Path(name).exists():
            raise InputError(f"{role} {name}: a local path, but not a loadable model folder (config.json "
                             f"missing or unreadable): {e}") from e
        raise InputError(f"{role} {name!r}: not a local path, and the hub could not serve it as a model id "
                         f"(offline or HF_HUB_OFFLINE set, gated, misspelled, or revision {revision!r} "
                         f"missing): {type(e).__name__}") from e


# transformers 5.25 defaults `use_kernels` to True: from_pretrained on a GPU then resolves layer
# kernels (code) on the hub, `kernels-community/...`; without network every 4-bit load failed there
# (an H200, kernels 0.19). The kit loads no remote code unless a recipe says so, so every
# from_pretrained of a model passes this.
NO_HUB_KERNELS = {"use_kernels": False}
def set_cpu_4bit_repacking(model, enabled: bool) -> int:
    """Allow or forbid bitsandbytes' in-place CPU repacking of 4-bit weights; returns how many
    `Linear4bit` layers were set.

    bitsandbytes 0.50 on CPUs with AVX512-BF16 repacks a `Linear4bit` weight in place the first
    time it runs in eval mode without grad (`support_avx512bf16_for_cpu`). The repacked layout
    breaks training afterwards (in-place op on a leaf view), crashes for layers whose input size
    is not a multiple of the 4-bit block, and changes logits (bf16 absmax). The kit's policy: off
    for every model by default, so 4-bit behaves the same on every CPU; inference-only callers
    may opt in for speed.
    """
    import bitsandbytes as bnb
    from bitsandbytes.functional import has_avx512bf16

    allowed = enabled and has_avx512bf16()
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for m in layers:
        m.support_avx512bf16_for_cpu = allowed
    return len(layers)


def load_pretrained(cls, name: str, quantization: str, revision: str | None, device,
                    cpu_4bit_repacking: bool = False):
    """`cls.from_pretrained` under the kit's one loading policy (dtype, 4-bit, attention).

    `cpu_4bit_repacking` (inference only): see `set_cpu_4bit_repacking`."""
    if quantization not in ("4bit", "none"):
        raise InputError(f"quantization {quantization!r}: expected '4bit' or 'none'")
    device = torch.device(device) if device is not None else default_device()
    dtype = compute_dtype(device)
    kwargs = dict(revision=revision, dtype=dtype, use_safetensors=True,
                  attn_implementation=attn_implementation(device), **NO_HUB_KERNELS)
    if quantization == "4bit":
        kwargs.update(quantization_config=bnb_config(dtype), device_map={"": device})
    model = cls.from_pretrained(str(name), **kwargs)
    if quantization == "none":
        return model.to(device)
    set_cpu_4bit_repacking(model, cpu_4bit_repacking)
    return model


def load_vlm(base: str, *, quantization: str = "4bit", revision: str | None = None,
             device: str | torch.device | None = None):
    """Return (LlavaForConditionalGeneration, LlavaProcessor) for a Llava checkpoint."""
    cfg = model_config(base, revision)
    if cfg.model_type != "llava":
        raise InputError(f"{base}: model_type is {cfg.model_type!r}, expected a 'llava' checkpoint "
                         f"(compose one with `lora-vl compose` or `lora-vl adapt`)")
    model = load_pretrained(LlavaForConditionalGeneration, base, quantization, revision, device)
    return model, LlavaProcessor.from_pretrained(str(base), revision=revision)


def load_causal_lm(name: str, *, quantization: str = "none", revision: str | None = None,
                   device: str | torch.device | None = None, padding_side: str = "right"):
    """Return (AutoModelForCausalLM, tokenizer) — base LLMs and model judges. Generation wants
    `padding_side="left"` (batched prompts end where their answers begin)."""
    model_config(name, revision)
    model = load_pretrained(AutoModelForCausalLM, name, quantization, revision, device)
    tokenizer = AutoTokenizer.from_pretrained(str(name), revision=revision)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
