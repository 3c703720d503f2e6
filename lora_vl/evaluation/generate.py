"""Batched greedy decoding that gives exactly the batch-1 outputs.

Prompts are LEFT-padded with a zero attention mask on the pads; `generate` derives position ids
from the mask (cumsum - 1), so each row sees the same positions and keys as alone. Rows are
sorted by length before batching so pads stay few. transformers does the decoding; this module
only builds the batches and trims the answers.
"""
from __future__ import annotations

from typing import Callable

import torch
from transformers import GenerationConfig


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def collate(prompts: list[dict], pad_id: int, model) -> dict:
    """input_ids/attention_mask (left-padded) and, if any row has an image, stacked pixel_values."""
    ids, mask = left_pad([p["input_ids"] for p in prompts], pad_id)
    batch = {"input_ids": ids.to(model.device), "attention_mask": mask.to(model.device)}
    pixels = [p["pixel_values"] for p in prompts if p.get("pixel_values") is not None]
    if pixels:
        vision_dtype = next(model.get_submodule("model.vision_tower").parameters()).dtype \
            if _has_module(model, "model.vision_tower") else model.dtype
        batch["pixel_values"] = torch.cat(pixels).to(model.device, vision_dtype)
    return batch


def _has_module(model, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


def trim(row: list[int], stops: list[int]) -> list[int]:
    """New tokens up to (not including) the first stop; generate pads only after a stop."""
    for i, t in enumerate(row):
        if t in stops:
            return row[:i]
    return row


@torch.no_grad()
def generate_tokens(model, tokenizer, prompts: list[dict], *, batch_size: int, max_new_tokens: int,
                    on_batch: Callable[[list[int], list[list[int]]], None] | None = None) -> list[list[int]]:
    """Greedy answers (token ids) for `prompts` ({'input_ids', 'pixel_values'?}), in input order.

    `on_batch(indices, answers)` runs after each batch (the generation cache appends there).
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = eos_ids(model, tokenizer)
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                              eos_token_id=stops)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]["input_ids"]))
    out: list[list[int] | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([prompts[i] for i in idx], pad_id, model)
        gen = model.generate(**batch, generation_config=config)
        new = gen[:, batch["input_ids"].shape[1]:].tolist()
        answers = [trim(row, stops) for row in new]
        for i, a in zip(idx, answers):
            out[i] = a
        if on_batch is not None:
            on_batch(idx, answers)
    return out  # type: ignore[return-value]


def decode(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


def generate_texts(model, tokenizer, prompts: list[dict], *, batch_size: int, max_new_tokens: int,
                   on_batch: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
    """`generate_tokens`, decoded; `on_batch` receives decoded texts."""
    hook = None
    if on_batch is not None:
        def hook(idx, answers):
            on_batch(idx, [decode(tokenizer, a) for a in answers])
    toks = generate_tokens(model, tokenizer, prompts, batch_size=batch_size,
                           max_new_tokens=max_new_tokens, on_batch=hook)
    return [decode(tokenizer, t) for t in toks]
