"""The evaluated model: base LLM or Llava (+ any stack of PEFT adapters), its fingerprint, and
item -> prompt encoding through the project's one prompt builder (`lora_vl.data.encode`).

Adapters stay unmerged PEFT layers in memory (PEFT sums stacked deltas), so no merged model is
ever written to disk; merged adapters from `lora-vl merge` are ordinary adapter dirs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from lora_vl.artifacts import fingerprint_files, fingerprint_obj
from lora_vl.handoff import MANIFEST, open_adapter
from lora_vl.data.encode import IMAGE_PLACEHOLDER, encode_chat
from lora_vl.models.load import load_causal_lm, load_vlm, model_config
from lora_vl.models.lora import attach_adapters
from lora_vl.evaluation.items import EvalItem, load_image


@dataclass
class EvalModel:
    model: object
    tokenizer: object
    processor: object  # LlavaProcessor, or a text-only stand-in for a base LLM
    is_vlm: bool
    fingerprint: str


def model_type(base: str, revision: str | None) -> str:
    return model_config(base, revision, role="--model").model_type


def text_processor(tokenizer):
    """`encode_chat` takes a processor; text-only items need only its tokenizer."""
    return SimpleNamespace(tokenizer=tokenizer)


def check_model_inputs(base: str, adapters: list[str], gen) -> bool:
    """Fail early on bad inputs, before any model loads: every adapter is a readable PEFT
    adapter (made on `base` unless gen.check_adapter_base is off), and the base's config is
    readable. Returns whether the base is a Llava (VLM)."""
    for a in adapters:
        adapter = open_adapter(a)
        if gen.check_adapter_base:
            adapter.check_base(base)
    return model_type(base, gen.revision) == "llava"


def _dir_fingerprint(path: str | Path, names: tuple[str, ...]) -> dict:
    p = Path(path)
    if not p.is_dir():
        return {"id": str(path)}
    files = [p / n for n in names if (p / n).is_file()]
    return {"id": str(path), "files": fingerprint_files(files) if files else None}


def model_fingerprint(base: str, adapters: list[str], revision: str | None, quantization: str,
                      extra: dict | None = None) -> str:
    """Base id/path + its manifest/config, each adapter's config+weights (in order), settings."""
    parts = {"base": _dir_fingerprint(base, (MANIFEST, "config.json")), "revision": revision,
             "adapters": [_dir_fingerprint(a, ("adapter_config.json", "adapter_model.safetensors"))
                          for a in adapters],
             "quantization": quantization, **(extra or {})}
    return fingerprint_obj(parts)[:20]


def prepare_eval(model, adapters: list):
    """The evaluation stage's model: `adapters` stacked unmerged and frozen, in eval mode."""
    model = attach_adapters(model, adapters)
    model.eval()
    return model


def load_eval_model(base: str, adapters: list[str], gen, *, device=None) -> EvalModel:
    """Load `base` (Llava or plain causal LM) with `adapters` stacked, for generation.
    Check the inputs first with `check_model_inputs` (run_suite does)."""
    is_vlm = model_type(base, gen.revision) == "llava"
    if is_vlm:
        model, processor = load_vlm(base, quantization=gen.quantization, revision=gen.revision, device=device)
        tokenizer = processor.tokenizer
    else:
        model, tokenizer = load_causal_lm(base, revision=gen.revision, quantization=gen.quantization,
                                          device=device, padding_side="left")
        processor = text_processor(tokenizer)
    tokenizer.padding_side = "left"
    model = prepare_eval(model, list(adapters))
    fp = model_fingerprint(base, adapters, gen.revision, gen.quantization)
    return EvalModel(model, tokenizer, processor, is_vlm, fp)


def encode_item(em: EvalModel, item: EvalItem) -> dict:
    """One user turn: '<image>\\n' + prompt for image items (the LLaVA-1.5 layout), else the prompt."""
    images = [load_image(item)] if item.has_image else []
    content = f"{IMAGE_PLACEHOLDER}\n{item.prompt}" if images else item.prompt
    enc = encode_chat(em.processor, [{"role": "user", "content": content}], images,
                      add_generation_prompt=True, where=f"{item.benchmark} item {item.id}")
    return {"input_ids": enc.input_ids, "pixel_values": enc.pixel_values}
