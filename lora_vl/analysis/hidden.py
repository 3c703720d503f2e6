"""The residual stream at the last prompt token, after every decoder layer of the language model.

The last prompt token is where the model decides how to answer (the end of the chat template's
generation prompt), so refusal-direction work reads the hidden states there. Decoder-layer
forward hooks give the residual stream itself; `output_hidden_states` would give the final
layer after the model's last norm instead. Prompts are left-padded in batches with position ids
counted from the attention mask, so each row gets the hidden states it would get alone.
"""
from __future__ import annotations

import gc

import torch

from lora_vl.errors import InputError
from lora_vl.evaluation.generate import collate
from lora_vl.evaluation.items import EvalItem
from lora_vl.evaluation.model_io import check_model_inputs, encode_item, load_eval_model
from lora_vl.evaluation.suite import GenerationSpec


def decoder_layers(model) -> torch.nn.ModuleList:
    """The language model's decoder layers, under PEFT wrappers and inside a Llava."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(base.get_decoder(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{type(base).__name__}: no decoder layer list found (get_decoder().layers)")
    return layers


@torch.no_grad()
def last_token_states(em, items: list[EvalItem], batch_size: int) -> torch.Tensor:
    """[n_items, n_layers, hidden] float32 on CPU: the output of each decoder layer at the last
    prompt position, for each item encoded as `lora-vl eval` encodes it (chat template, image)."""
    prompts = [encode_item(em, it) for it in items]
    layers = decoder_layers(em.model)
    captured: list[torch.Tensor | None] = [None] * len(layers)

    def hook(i):
        def save(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[i] = hidden[:, -1, :].float().cpu()
        return save

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    pad = em.tokenizer.pad_token_id if em.tokenizer.pad_token_id is not None else em.tokenizer.eos_token_id
    chunks = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = collate(prompts[start:start + batch_size], pad, em.model)
            batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            em.model(**batch, logits_to_keep=1)
            chunks.append(torch.stack(captured, dim=1))
    finally:
        for h in handles:
            h.remove()
    return torch.cat(chunks)


def model_states(entry, items: list[EvalItem], recipe) -> tuple[torch.Tensor, bool]:
    """Load one model (+ adapters) through the evaluation loader, read its states, free it.
    Returns (states, is_vlm)."""
    gen = GenerationSpec(quantization=recipe.quantization, revision=recipe.revision,
                         check_adapter_base=recipe.check_adapter_base)
    is_vlm = check_model_inputs(entry.base, list(entry.adapters), gen)
    if not is_vlm and any(it.has_image for it in items):
        raise InputError(f"analyze models: {entry.name!r} ({entry.base}) is a text-only LM, but "
                         "prompts.images is true; use text-only prompts or only Llava models")
    em = load_eval_model(entry.base, list(entry.adapters), gen, device=recipe.device)
    states = last_token_states(em, items, recipe.batch_size)
    del em
    gc.collect()
    return states, is_vlm
