"""The one training loop: gradient accumulation, schedule, checkpoints, resume, logging, and
data parallelism over N processes.

Any stage hands it a model whose trainable parameters are set, parameter groups, a TrainSet
and a loss. Checkpoints hold the trainable weights (safetensors), optimizer and scheduler
state; each is written to a temporary directory and renamed, so a run killed at any moment
(SIGKILL included) resumes from its last complete checkpoint when the same command runs again.
Batch order is a pure function of (seed, epoch) and the random state is re-seeded from
(seed, step, micro-batch) before every micro-batch, so a resumed run computes exactly what it
would have, and dropout draws the same masks whichever process runs a micro-batch.

The loss of an optimizer step is the mean over ALL its labelled tokens (as current HF Trainer
computes it), not the mean of per-micro-batch means, which weights short and long micro-batches
alike and so differs under length-grouped batching; `loss_average: micro_batch` keeps the
latter. A step in which every record was skipped as bad is not a training step: no update, not
counted, and it does not define the loss.

N processes (`accelerate launch` / `torchrun`): each optimizer step's micro-batches are dealt
round-robin to the processes, so the global batch and the samples of every step are the same for
any N; gradients are all-reduced once per step. Why not torch's DDP wrapper: a process whose
micro-batches were all skipped has nothing to run backward on, which DDP's reducer cannot
handle, and the gradient must be normalised by the token count of the whole step, known only
after a reduction; one all-reduce of the (LoRA-sized) gradients per step is simple and exact.
Rank 0 writes checkpoints, logs and progress; all ranks hold identical weights and optimizer
state, so a run resumes with any N.
"""
from __future__ import annotations

import json
import math
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_scheduler

from lora_vl.artifacts import atomic_dir
from lora_vl.errors import InputError
from lora_vl.data.batching import length_grouped_batches, random_batches
from lora_vl.data.check import machine_workers
from lora_vl.data.feed import micro_batches
from lora_vl.data.encode import IGNORE
from lora_vl import distributed as dist
from lora_vl.train.chunked import labelled_token_logps
from lora_vl.train.config import DEFAULTS_CHANGED, OptimConfig


@dataclass
class LoopResult:
    steps: int                 # optimizer steps taken (all-skipped steps are not counted)
    final_loss: float | None   # loss of the last step taken (None if none was)
    resumed_from: int
    tokens: int
    seconds: float
    skipped_steps: int = 0
    data_seconds: float = 0.0  # of `seconds`, spent waiting for batches


@dataclass
class TokenLoss:
    """The default loss: next-token cross-entropy of the model, summed over the micro-batch's
    labelled tokens and divided by `num_items` (the step's token count): HF's
    `num_items_in_batch`, so a step's micro-batches add up to the mean over all its tokens.
    `chunk` > 0: the same sum computed over the labelled positions `chunk` at a time, without
    the full-vocabulary logits (`train/chunked.py`); 0: the model's own loss."""
    chunk: int = 0

    def count(self, batch: dict) -> int:
        return int((batch["labels"][:, 1:] != IGNORE).sum())

    def __call__(self, model, batch: dict, num_items: int) -> torch.Tensor:
        if not self.chunk:
            return model(**batch, num_items_in_batch=num_items).loss
        logps, _ = labelled_token_logps(model, batch, self.chunk)
        return -logps.sum() / num_items


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def make_optimizer(groups: list[dict], cfg: OptimConfig):
    if cfg.optimizer == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(groups, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


class Schedule:
    """Which micro-batches make up each optimizer step, across epochs and processes."""

    def __init__(self, lengths: list[int], cfg: OptimConfig):
        self.lengths, self.cfg = lengths, cfg
        self.accum = cfg.global_batch_size // cfg.micro_batch_size  # micro-batches per step, all processes
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

    def step_batches(self, step: int, rank: int = 0, world: int = 1) -> list[list[int]]:
        """This process's micro-batches of `step`: every world-th one, starting at its rank."""
        return [self.micro_batch(step * self.accum + k) for k in range(rank, self.accum, world)]


def step_seed(seed: int, step: int, micro: int) -> int:
    """The random state of micro-batch `micro` (its place in the step, 0..accum-1): not the
    process's rank, so N processes draw what one process draws for the same micro-batch."""
    return zlib.crc32(f"{seed}:{step}:{micro}".encode())


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = [p for p in ckpt_dir.glob("step-*") if (p / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(ckpt_dir: Path, step: int, model, optimizer, scheduler, fingerprint: str,
                    progress: dict, keep: int) -> None:
    with atomic_dir(ckpt_dir / f"step-{step}", overwrite=True) as tmp:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint, **progress}))
    for old in sorted(ckpt_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler, fingerprint: str) -> dict:
    state = json.loads((path / "state.json").read_text())
    if state["fingerprint"] != fingerprint:
        raise InputError(f"{path}: checkpoint was made by a different recipe; use a new output_dir "
                         f"or delete the checkpoints to start over ({DEFAULTS_CHANGED})")
    weights = load_file(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    missing = set(weights) ^ {n for n, p in params.items() if p.requires_grad}
    if missing:
        raise InputError(f"{path}: checkpoint parameters do not match the model: {sorted(missing)[:5]}")
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].device, params[n].dtype))
    extra = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    return state


def to_device(batch: dict, device, dtype) -> dict:
    out = {k: v.to(device) for k, v in batch.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


def sync_gradients(params: list[torch.Tensor]) -> None:
    """Sum every trainable gradient over the processes, in one flat all-reduce."""
    if dist.world_size() == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = dist.all_reduce_sum(torch.cat([g.reshape(-1).float() for g in grads]))
    pos = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[pos:pos + n].view_as(g).to(g.dtype)
        pos += n


def autocast_policy(device_type: str, run_on: str | None = None):
    """Training's mixed precision on `device_type`: bf16 autocast on CUDA (fp32 master weights,
    bf16 matmuls); none elsewhere (CPU training runs in the model's own dtypes). `run_on` applies
    that policy on another device: the planner measures a CUDA step on a CPU."""
    if device_type == "cuda":
        return torch.autocast(run_on or device_type, dtype=torch.bfloat16)
    return torch.autocast(run_on or device_type, enabled=False)


def micro_step(model, loss_fn, batch: dict, num_items: int, device, pixel_dtype, autocast,
               on_phase: Callable[[str], None] | None = None) -> torch.Tensor:
    """Forward and backward of one micro-batch, its gradient added to `.grad`; its loss, detached.
    `on_phase("forward" / "backward")` lets an observer (the planner's tracker) split the step."""
    if on_phase is not None:
        on_phase("forward")
    with autocast:
        loss = loss_fn(model, to_device(batch, device, pixel_dtype), max(num_items, 1))
    if on_phase is not None:
        on_phase("backward")
    loss.backward()
    return loss.detach()


def accumulate(model, step: int, batches: list[tuple[int, dict]], counts: list[int], n_items: int,
               n_batches: int, loss_fn, cfg: OptimConfig, device, pixel_dtype, autocast=None,
               on_phase: Callable[[str], None] | None = None) -> torch.Tensor:
    """This process's micro-batches of one step, as (place k in the step, batch), gradients
    accumulated; their summed loss (float64). `n_items` / `n_batches`: the whole step's items and
    micro-batches over all processes. Each micro-batch's randomness (LoRA dropout) is seeded by
    (seed, step, k), so N processes draw what one process draws."""
    autocast = autocast if autocast is not None else autocast_policy(device.type)
    step_loss = torch.zeros((), dtype=torch.float64)
    for (k, batch), count in zip(batches, counts):
        torch.manual_seed(step_seed(cfg.seed, step, k))
        denom = n_items if cfg.loss_average == "token" else count * n_batches
        loss = micro_step(model, loss_fn, batch, denom, device, pixel_dtype, autocast, on_phase)
        step_loss += loss.double().cpu()
    return step_loss


def optimizer_step(trainable: list[torch.Tensor], optimizer, cfg: OptimConfig) -> None:
    """Gradients summed over the processes, clipped, applied, cleared."""
    sync_gradients(trainable)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def step_feed(trainset, sched: Schedule, start: int, workers: int) -> Iterator[list[tuple[int, dict]]]:
    """This process's micro-batches of each step from `start` on, as (place k in the step,
    collated batch), skipped-bad ones left out; built ahead by `workers` DataLoader processes
    (see data/feed.py)."""
    rank, world = dist.rank(), dist.world_size()
    places = list(range(rank, sched.accum, world))
    order = (mb for step in range(start, sched.total_steps) for mb in sched.step_batches(step, rank, world))
    stream = micro_batches(trainset, order, workers)
    for _ in range(start, sched.total_steps):
        yield [(k, b) for k, b in ((k, next(stream)) for k in places) if b is not None]


def accumulate_step(model, step: int, mine: list[tuple[int, dict]], loss_fn, cfg: OptimConfig, device,
                    pixel_dtype) -> tuple[float, int] | None:
    """Forward + backward of one optimizer step's micro-batches on this process (`mine`, from
    `step_feed`), gradients summed over all processes. Returns (the step's loss, its token
    count), or None if every record of the step was skipped as bad (then nothing ran and no
    gradient exists)."""
    batches = [b for _, b in mine]
    counts = [loss_fn.count(b) for b in batches]
    n_items, n_batches, n_tokens = dist.all_reduce_sum(torch.tensor(
        [sum(counts), len(batches), sum(int(b["attention_mask"].sum()) for b in batches)],
        dtype=torch.float64)).tolist()
    if n_batches == 0:
        return None
    step_loss = accumulate(model, step, mine, counts, n_items, n_batches, loss_fn, cfg, device, pixel_dtype)
    return float(dist.all_reduce_sum(step_loss)), int(n_tokens)


def train(model, groups: list[dict], trainset, cfg: OptimConfig, *, ckpt_dir: Path, tb_dir: Path,
          fingerprint: str, desc: str, loss_fn=None, pixel_dtype=torch.float32,
          on_snapshot: Callable[[int], None] | None = None, data_workers: int | None = None) -> LoopResult:
    """Train to the end (or resume). `loss_fn` has `count(batch)` (items the step averages over)
    and `__call__(model, batch, num_items)` (this micro-batch's sum / num_items); default
    `TokenLoss`. `on_snapshot(step)` runs on rank 0 every `cfg.snapshot_every` steps.
    `data_workers` build batches ahead (default: the machine's data workers less one, leaving
    the training process its CPU, at most 8)."""
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only training needs it

    loss_fn = loss_fn or TokenLoss()
    main = dist.is_main()
    torch.manual_seed(cfg.seed)
    device = next(p for p in model.parameters() if p.requires_grad).device
    sched = Schedule(trainset.lengths, cfg)
    optimizer = make_optimizer(groups, cfg)
    scheduler = get_scheduler(cfg.scheduler, optimizer,
                              num_warmup_steps=math.ceil(cfg.warmup_ratio * sched.total_steps),
                              num_training_steps=sched.total_steps)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(ckpt_dir)
    progress = {"done": 0, "skipped": 0, "loss": None}
    start = 0
    if last:
        state = load_checkpoint(last, model, optimizer, scheduler, fingerprint)
        start = state["step"]
        progress = {"done": state.get("done", start), "skipped": state.get("skipped", 0), "loss": state.get("loss")}
        if main:
            tqdm.write(f"{desc}: resumed from checkpoint step {start} ({last})")
    writer = SummaryWriter(str(tb_dir)) if main else None
    trainable = [p for g in groups for p in g["params"]]
    model.train()
    tokens, t0, data_s = 0, time.time(), 0.0
    workers = min(8, machine_workers() - 1) if data_workers is None else data_workers
    feed = step_feed(trainset, sched, start, workers)
    bar = tqdm(total=sched.total_steps, initial=start, desc=desc, unit="step", disable=not main)
    try:
        for step in range(start, sched.total_steps):
            t_step = time.time()
            batches = next(feed)
            data_s += time.time() - t_step  # time the step waited for its data
            done = accumulate_step(model, step, batches, loss_fn, cfg, device, pixel_dtype)
            if done is None:  # every record of this step was skipped as bad: not a training step
                progress["skipped"] += 1
                bar.update(1)
                continue
            if not math.isfinite(done[0]):  # before the update: the last checkpoint stays the last good state
                raise InputError(f"{desc}: the loss at step {step + 1} is {done[0]} (not finite); stopped before "
                                 f"the update, last good checkpoint kept in {ckpt_dir}. Lower the learning rate "
                                 "or check the parent adapter's and the data's values")
            optimizer_step(trainable, optimizer, cfg)
            scheduler.step()
            loss_value, n_tokens = done
            progress.update(done=progress["done"] + 1, loss=loss_value)
            tokens += n_tokens
            tps = n_tokens / max(time.time() - t_step, 1e-9)
            if main:
                writer.add_scalar("train/loss", loss_value, step + 1)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step + 1)
                writer.add_scalar("train/tokens_per_s", tps, step + 1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", tok_s=f"{tps:.0f}")
            bar.update(1)
            if (step + 1) % cfg.save_every == 0 or step + 1 == sched.total_steps:
                if main:
                    save_checkpoint(ckpt_dir, step + 1, model, optimizer, scheduler, fingerprint, progress,
                                    cfg.keep_checkpoints)
                dist.barrier()
            if on_snapshot is not None and cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0:
                if main:
                    on_snapshot(step + 1)
                dist.barrier()
    finally:  # close the bar first, so an error message is the last thing printed
        bar.close()
        feed.close()  # ends the DataLoader's workers
        if writer is not None:
            writer.close()
    model.eval()
    return LoopResult(progress["done"], progress["loss"], start, tokens, time.time() - t0, progress["skipped"],
                      data_s)
