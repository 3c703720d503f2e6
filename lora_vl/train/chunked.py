"""The loss over the labelled positions only, chunk by chunk: no full-vocabulary logits tensor.

HF's `model(**batch, labels=...)` runs `lm_head` on every position and keeps the
(rows × sequence × vocabulary) logits, and their fp32 copy, for the backward: the plan's
"logits & loss" category. Here the model runs to its last hidden state, the positions whose next
token is labelled are gathered (prompt and image positions are never scored), and `lm_head` +
cross-entropy run on `chunk` of them at a time, each chunk under non-reentrant activation
checkpointing: a chunk keeps only its inputs (hidden rows, targets), its logits are recomputed
in the backward, so at most one chunk's logits are alive, in the forward or the backward.

Written by hand: transformers and PEFT have no chunked loss (Liger-Kernel's and Unsloth's fused
kernels do this, and are not dependencies of the kit); the pieces are torch's
(`cross_entropy`, `torch.utils.checkpoint`).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lora_vl.data.encode import IGNORE


def body_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the network up to its last hidden state, its lm_head) of a Llava or a causal LM, under
    PEFT or not. Both HF classes compute `self.lm_head(self.model(...)[0])` (the final norm is
    inside `self.model`); PEFT's LoRA layers and the projector's modules_to_save wrapper replace
    modules inside them, so calling `self.model` runs the adapters as the full forward does."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.get_output_embeddings()


def _token_logps(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # fp32 like HF's loss (ForCausalLMLoss upcasts the logits before the cross-entropy)
    return -F.cross_entropy(head(hidden).float(), targets, reduction="none")


def labelled_token_logps(model, batch: dict, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of every labelled token, fp32, shape (N,); the row each belongs to, shape (N,)).
    Position t predicts token t+1, scored where token t+1 is labelled (HF's shift)."""
    if chunk < 1:
        raise ValueError(f"loss chunk of {chunk} tokens: expected at least 1")
    body, head = body_and_head(model)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = body(**inputs, use_cache=False)[0]
    labels = batch["labels"][:, 1:].to(hidden.device)
    scored = labels != IGNORE
    rows = scored.nonzero()[:, 0]
    h, y = hidden[:, :-1][scored], labels[scored]
    score = functools.partial(_token_logps, head)
    if torch.is_grad_enabled():  # recomputed in backward: one chunk's logits alive at a time
        score = functools.partial(checkpoint, score, use_reentrant=False)
    # h.split gives one empty chunk when nothing is labelled: a zero loss still tied to the graph
    return torch.cat([score(hc, yc) for hc, yc in zip(h.split(chunk), y.split(chunk))]), rows
