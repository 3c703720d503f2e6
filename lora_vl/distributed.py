"""Data parallelism over N processes, launched by `accelerate launch` (or `torchrun`).

accelerate's `PartialState` reads the launcher's environment, starts the process group (NCCL on
GPUs, gloo on CPUs) and names this process's device; one process without a launcher is the
trivial case, so single-process runs need nothing. The training loop all-reduces the trainable
gradients itself, once per optimizer step (see `lora_vl.train.loop`; evaluation shards items, see
`lora_vl.evaluation.run`).
"""
from __future__ import annotations

import functools

import torch
from accelerate import PartialState


@functools.lru_cache(maxsize=1)
def state() -> PartialState:
    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    return state().process_index


def world_size() -> int:
    return state().num_processes


def is_main() -> bool:
    return state().is_main_process


def barrier() -> None:
    if world_size() > 1:
        state().wait_for_everyone()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over all processes (in place; `t` itself when there is one process)."""
    if world_size() > 1:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def shutdown() -> None:
    """End the process group once a command has finished on every process. Left to interpreter
    exit, gloo's threads can outlive it and abort the process ('terminate called without an
    active exception', seen on 2 CPU processes)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
