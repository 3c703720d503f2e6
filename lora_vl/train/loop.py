"""The one training loop: gradient accumulation, schedule, checkpoints, resume, logging.

Any stage hands it a model whose trainable parameters are set, parameter groups, a TrainSet
and a loss function. Checkpoints hold the trainable weights (safetensors), optimizer,
scheduler and RNG state; each is written to a temporary directory and renamed, so a run
killed at any moment (SIGKILL included) resumes from its last complete checkpoint when the
same command runs again. Batch order is a pure function of (seed, epoch), so a resumed run
sees exactly the batches it would have seen.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_scheduler

from lora_vl.artifacts import atomic_dir
from lora_vl.data.batching import length_grouped_batches, random_batches
from lora_vl.train.config import OptimConfig


@dataclass
class LoopResult:
    steps: int
    final_loss: float
    resumed_from: int
    tokens: int
    seconds: float


def default_loss(model, batch) -> torch.Tensor:
    return model(**batch).loss


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def make_optimizer(groups: list[dict], cfg: OptimConfig):
    if cfg.optimizer == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(groups, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


class Schedule:
    """Which micro-batches make up each optimizer step, across epochs."""

    def __init__(self, lengths: list[int], cfg: OptimConfig):
        self.lengths, self.cfg = lengths, cfg
        self.accum = cfg.global_batch_size // cfg.micro_batch_size
        self.per_epoch = math.ceil(len(lengths) / cfg.micro_batch_size)
        total_micro = math.ceil(cfg.epochs * self.per_epoch)
        self.total_steps = cfg.max_steps or max(1, math.ceil(total_micro / self.accum))
        self._epoch, self._batches = None, None

    def micro_batch(self, m: int) -> list[int]:
        epoch, pos = divmod(m, self.per_epoch)
        if epoch != self._epoch:
            order = length_grouped_batches if self.cfg.group_by_length else random_batches
            self._batches = order(self.lengths, self.cfg.micro_batch_size, self.cfg.seed + epoch)
            self._epoch = epoch
        return self._batches[pos]


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = [p for p in ckpt_dir.glob("step-*") if (p / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(ckpt_dir: Path, step: int, model, optimizer, scheduler, fingerprint: str,
                    loss: float, keep: int) -> None:
    with atomic_dir(ckpt_dir / f"step-{step}", overwrite=True) as tmp:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint, "loss": loss}))
    for old in sorted(ckpt_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler, fingerprint: str) -> int:
    state = json.loads((path / "state.json").read_text())
    if state["fingerprint"] != fingerprint:
        raise ValueError(f"{path}: checkpoint was made by a different recipe; use a new output_dir "
                         "or delete the checkpoints to start over")
    weights = load_file(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    missing = set(weights) ^ {n for n, p in params.items() if p.requires_grad}
    if missing:
        raise ValueError(f"{path}: checkpoint parameters do not match the model: {sorted(missing)[:5]}")
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].device, params[n].dtype))
    extra = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    return state["step"]


def to_device(batch: dict, device, dtype) -> dict:
    out = {k: v.to(device) for k, v in batch.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


def train(model, groups: list[dict], trainset, cfg: OptimConfig, *, ckpt_dir: Path, tb_dir: Path,
          fingerprint: str, desc: str, loss_fn: Callable = default_loss,
          pixel_dtype=torch.float32, on_snapshot: Callable[[int], None] | None = None) -> LoopResult:
    """Train to the end (or resume); `on_snapshot(step)` runs every `cfg.snapshot_every` steps."""
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(cfg.seed)
    device = next(p for p in model.parameters() if p.requires_grad).device
    sched = Schedule(trainset.lengths, cfg)
    optimizer = make_optimizer(groups, cfg)
    scheduler = get_scheduler(cfg.scheduler, optimizer,
                              num_warmup_steps=math.ceil(cfg.warmup_ratio * sched.total_steps),
                              num_training_steps=sched.total_steps)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(ckpt_dir)
    start = load_checkpoint(last, model, optimizer, scheduler, fingerprint) if last else 0
    if start:
        tqdm.write(f"{desc}: resumed from checkpoint step {start} ({last})")
    writer = SummaryWriter(str(tb_dir))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    trainable = [p for g in groups for p in g["params"]]
    model.train()
    loss_value, tokens, t0 = float("nan"), 0, time.time()
    bar = tqdm(total=sched.total_steps, initial=start, desc=desc, unit="step")
    for step in range(start, sched.total_steps):
        step_loss, step_tokens, t_step = 0.0, 0, time.time()
        for k in range(sched.accum):
            batch = trainset.collate([trainset[i] for i in sched.micro_batch(step * sched.accum + k)])
            if batch is None:  # every record of this micro-batch was skipped as bad
                continue
            batch = to_device(batch, device, pixel_dtype)
            with autocast:
                loss = loss_fn(model, batch) / sched.accum
            loss.backward()
            step_loss += loss.item()
            step_tokens += int(batch["attention_mask"].sum())
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value, tokens = step_loss, tokens + step_tokens
        tps = step_tokens / max(time.time() - t_step, 1e-9)
        writer.add_scalar("train/loss", loss_value, step + 1)
        writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step + 1)
        writer.add_scalar("train/tokens_per_s", tps, step + 1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", tok_s=f"{tps:.0f}")
        bar.update(1)
        if (step + 1) % cfg.save_every == 0 or step + 1 == sched.total_steps:
            save_checkpoint(ckpt_dir, step + 1, model, optimizer, scheduler, fingerprint, loss_value,
                            cfg.keep_checkpoints)
        if on_snapshot is not None and cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0:
            on_snapshot(step + 1)
    bar.close()
    writer.close()
    model.eval()
    if start >= sched.total_steps:  # finished earlier: report the checkpointed loss
        loss_value = json.loads((last / "state.json").read_text())["loss"]
    return LoopResult(sched.total_steps, loss_value, start, tokens, time.time() - t0)
