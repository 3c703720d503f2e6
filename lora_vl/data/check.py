"""The data check's verdicts, computed in parallel and cached beside the run.

A verdict per record: its token length, `OVERLONG`, or the message of the `BadRecord` that
rejects it. Verdicts do not depend on `bad_records` (the policy is applied to them afterwards,
in record order, so the report and the first bad record named are the serial check's). Worker
processes are forked, so they share the records and the processor without pickling them.

The cache holds the verdicts under a key of everything they depend on: the data's identity (the
caller's provenance: file hashes, folder stamps, revisions), the mixture settings, the tokenizer,
the chat template, the image geometry and `max_length`/`overlong`. Image files are not re-read on
a cached rerun: one deleted or corrupted since is caught when its batch is built.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from pathlib import Path
from typing import Callable, Iterator

from tqdm.auto import tqdm

from lora_vl import distributed as dist
from lora_vl.artifacts import atomic_write_text, fingerprint_obj

OVERLONG = -1
CACHE_VERSION = 1  # bump when encoding changes what a verdict is
CHUNK = 256  # records per task: large enough that the pipe costs nothing, small enough to balance

Verdict = int | str


def machine_workers() -> int:
    """Processes for data work on this machine: LORA_VL_DATA_WORKERS, or the CPUs this process may
    use shared among the training processes on it."""
    if os.environ.get("LORA_VL_DATA_WORKERS"):
        return max(1, int(os.environ["LORA_VL_DATA_WORKERS"]))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // dist.world_size())


Judge = Callable[[int, int], list[Verdict]]
_judge: Judge | None = None  # set in the parent before forking; workers inherit it


def _judge_chunk(span: tuple[int, int]) -> list[Verdict]:
    return _judge(*span)


def verdicts(judge: Judge, n: int, workers: int, desc: str = "checking data") -> Iterator[Verdict]:
    """The verdicts of records 0..n-1 in order, `judge(a, b)` giving those of records a..b-1
    (a chunk at a time: records are encoded together), over `workers` forked processes (1: in
    this one). A consumer that stops early (the first bad record under `bad_records: error`)
    ends the pool."""
    bar = tqdm(total=n, desc=desc, unit="rec", leave=False, disable=not dist.is_main())
    spans = [(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]
    try:
        if workers <= 1 or n <= CHUNK:
            for span in spans:
                chunk = judge(*span)
                yield from chunk
                bar.update(len(chunk))
            return
        global _judge
        _judge = judge
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for chunk in pool.imap(_judge_chunk, spans):
                yield from chunk
                bar.update(len(chunk))
    finally:
        _judge = None
        bar.close()


def tokenizer_identity(tokenizer) -> str:
    """The tokenizer's full definition (vocabulary, merges, normalizer, added tokens) hashed."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())
    return fingerprint_obj([type(tokenizer).__name__, spec, tokenizer.special_tokens_map])


def processor_identity(processor, chat_template: str | None) -> dict:
    """What of the processor changes a record's tokens: tokenizer, template, image token count."""
    tok = processor.tokenizer
    ip = getattr(processor, "image_processor", None)
    return {"tokenizer": tokenizer_identity(tok),
            "template": tok.get_chat_template(chat_template) if (chat_template or tok.chat_template) else None,
            "image_processor": ip.to_dict() if ip is not None else None,
            "image_tokens": [getattr(processor, k, None) for k in
                             ("patch_size", "num_additional_image_tokens", "vision_feature_select_strategy")]}


class CheckCache:
    """One file of verdicts in `folder` (a run's output), replaced when the key changes."""

    def __init__(self, folder: str | Path, data_identity):
        self.path, self.data_identity = Path(folder) / "data-check.json", data_identity

    def key(self, cfg, kind: str, processor, chat_template: str | None) -> str:
        settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "bad_records"}
        return fingerprint_obj([CACHE_VERSION, kind, self.data_identity, settings,
                                processor_identity(processor, chat_template)])

    def load(self, key: str, n: int) -> list[Verdict] | None:
        try:
            held = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: check again
            return None
        if held.get("key") != key or len(held.get("verdicts", ())) != n:
            return None
        return held["verdicts"]

    def save(self, key: str, found: list[Verdict]) -> None:
        if dist.is_main():
            atomic_write_text(self.path, json.dumps({"key": key, "verdicts": found}, separators=(",", ":")))
