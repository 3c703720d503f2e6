"""DPO loss for the shared training loop (`loss_fn`), written by hand.

TRL's DPOTrainer brings its own trainer loop, checkpoints and data collation, and its PEFT
reference model is `disable_adapter()` — which would also switch off the frozen VL adapter
underneath. Here the loss is a few lines: the reference log-probabilities come from the same
network with only the safety adapter switched off (a context manager the caller supplies),
so no second copy of the model is held and the loop, checkpoints and resume are the project's.

Losses (logits = (π_c − π_r) − (ref_c − ref_r), log-probs of the response tokens):
- sigmoid (Rafailov et al. 2023): −log σ(β·logits), with optional label smoothing ε
  (conservative DPO: −(1−ε)·log σ(β·logits) − ε·log σ(−β·logits));
- ipo (Azar et al. 2023): (logits − 1/(2β))², on per-token mean log-probs as the IPO paper does.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from lora_vl.data.encode import IGNORE
from lora_vl.train.chunked import labelled_token_logps


def sequence_logps(model, batch: dict, average: bool = False, chunk: int = 0) -> torch.Tensor:
    """Sum (or mean) of log p(token) over each row's labelled tokens; shape (rows,). `chunk` > 0:
    only the labelled positions are scored, `chunk` at a time (`train/chunked.py`)."""
    labels = batch["labels"][:, 1:]
    if chunk:
        token_logps, rows = labelled_token_logps(model, batch, chunk)
        total = token_logps.new_zeros(labels.shape[0]).index_add(0, rows, token_logps)
    else:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits[:, :-1].float()
        token_logps = -F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
        total = token_logps.sum(1)
    counts = (labels != IGNORE).sum(1).to(total.device)
    return total / counts.clamp(min=1) if average else total


def preference_losses(pol_c: torch.Tensor, pol_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor,
                      beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> torch.Tensor:
    """The DPO-family loss of each pair, from policy and reference log-probs."""
    logits = (pol_c - pol_r) - (ref_c - ref_r)
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"DPO loss {loss_type!r}: expected 'sigmoid' or 'ipo'")
    return losses


@dataclass
class DpoLoss:
    """`loss_fn(model, batch)` for `train`: policy pass with grad, reference pass without."""
    beta: float
    loss_type: str
    label_smoothing: float = 0.0
    reference: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    chunk: int = 0  # > 0: log-probs over the labelled positions, this many at a time (no full logits)

    def logps(self, model, pairs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        lp = sequence_logps(model, pairs, average=self.loss_type == "ipo", chunk=self.chunk)
        return lp.chunk(2)

    def reference_logps(self, model, pairs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), self.reference():
            return self.logps(model, pairs)

    def count(self, pairs: dict) -> int:
        """A step's loss is the mean over its pairs."""
        return pairs["input_ids"].shape[0] // 2

    def __call__(self, model, pairs: dict, num_items: int | None = None) -> torch.Tensor:
        """`pairs`: 2B rows from PairSet.collate — B chosen, then B rejected. Returns the sum of
        the B pair losses / `num_items` (default B: the mean)."""
        ref_c, ref_r = self.reference_logps(model, pairs)
        pol_c, pol_r = self.logps(model, pairs)
        losses = preference_losses(pol_c, pol_r, ref_c, ref_r, self.beta, self.loss_type, self.label_smoothing)
        return losses.sum() / (num_items or len(losses))
