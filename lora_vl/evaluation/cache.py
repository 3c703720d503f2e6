"""Generation cache: JSONL, one line per (model fingerprint, benchmark, item id).

Lines are appended and fsynced after every batch, so a crash (even SIGKILL) loses at most the
batch in flight. A torn last line from a kill mid-write is skipped on reading. A line whose
prompt hash differs from the item's current prompt is stale and regenerated.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def prompt_hash(prompt: str, image_ref) -> str:
    return hashlib.sha256(f"{prompt}\x00{image_ref}".encode()).hexdigest()[:16]


class GenerationCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[tuple[str, str, str], dict] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    self.records[(rec["model"], rec["benchmark"], rec["id"])] = rec
                except (json.JSONDecodeError, KeyError):
                    print(f"{self.path}:{n}: skipping a torn/invalid cache line (regenerated)", file=sys.stderr)

    def get(self, model: str, benchmark: str, item_id: str, phash: str) -> str | None:
        rec = self.records.get((model, benchmark, item_id))
        if rec is None or rec.get("prompt_sha") != phash:
            return None
        return rec["response"]

    def append(self, records: list[dict]) -> None:
        """Write `records` durably (append, flush, fsync) and index them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            if f.tell() > 0 and not self._ends_with_newline():
                f.write("\n")  # a torn line from a killed run must not swallow ours
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for rec in records:
            self.records[(rec["model"], rec["benchmark"], rec["id"])] = rec

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
