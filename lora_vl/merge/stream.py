"""A streaming, atomic writer of the safetensors format: tensors are appended one at a time.

Hand-written because the safetensors library has no streaming writer: `save_file` /
`serialize_file` take every tensor of the file in one call, so the whole merged adapter (1.9 GB
for a rank-192 fp32 sum over Llama-2-7B) would have to be in memory at once. Here each tensor's
bytes go to disk as soon as the module is merged, and only the header is kept.

Format (https://github.com/huggingface/safetensors#format): 8-byte little-endian header length
N, N bytes of JSON {key: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}, then the raw little-endian bytes, offsets relative to the end of the header,
contiguous, in order. The header is padded with spaces to a multiple of 8 (as the library does),
so the data starts 8-byte aligned. Data is written after a reserved header area; if the header
outgrows the reservation the data is copied once behind a header of the right size.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import torch

from lora_vl.artifacts import fsync_dir

ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
# Upper bound of one header entry besides its key: dtype, up to `ndim` dims and two offsets of 20 digits.
_ENTRY_FIXED = len('"": {"dtype": "BOOL", "shape": [], "data_offsets": [, ]}, ') + 2 * 20


def header_reserve(entries, metadata: dict[str, str] | None = None) -> int:
    """Bytes that surely hold the header of `entries` = [(key, ndim), ...] (+ metadata)."""
    size = len(json.dumps({"__metadata__": metadata or {}})) + 16
    for key, ndim in entries:
        size += len(json.dumps(key)) + _ENTRY_FIXED + 22 * ndim
    return (size + 7) // 8 * 8


class SafetensorsWriter:
    """Write `path` tensor by tensor: a temp file beside it, renamed over `path` only on success.

        with SafetensorsWriter(path, metadata={"format": "pt"}, reserve=...) as w:
            w.add("key", tensor)

    An exception inside the block (or a crash) leaves no file at `path` and keeps an old one.
    """

    def __init__(self, path: str | Path, metadata: dict[str, str] | None = None, reserve: int = 0):
        if sys.byteorder != "little":
            raise RuntimeError("SafetensorsWriter writes raw tensor bytes; it needs a little-endian machine")
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self.reserve = (reserve + 7) // 8 * 8
        self.header: dict[str, dict] = {}
        self.offset = 0  # bytes of tensor data written so far
        self._file = None
        self._tmp: str | None = None

    def __enter__(self) -> "SafetensorsWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._file = os.fdopen(fd, "wb")
        self._file.seek(8 + self.reserve)
        return self

    def add(self, key: str, tensor: torch.Tensor) -> None:
        if key in self.header or key == "__metadata__":
            raise ValueError(f"{self.path}: tensor key {key!r} written twice (or reserved)")
        if tensor.dtype not in ST_DTYPES:
            raise ValueError(f"{self.path}: {key!r} has dtype {tensor.dtype}, not storable in safetensors here")
        t = tensor.detach().to("cpu").contiguous()
        nbytes = t.numel() * t.element_size()
        if nbytes:
            # A byte view of the tensor's own memory: no copy (a 0-dim tensor is reshaped first).
            self._file.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        self.header[key] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                            "data_offsets": [self.offset, self.offset + nbytes]}
        self.offset += nbytes

    def _header_bytes(self, size: int | None = None) -> bytes:
        head = dict(self.header)
        if self.metadata:
            head["__metadata__"] = self.metadata
        raw = json.dumps(head, separators=(",", ":")).encode()
        size = size if size is not None else (len(raw) + 7) // 8 * 8
        return struct.pack("<Q", size) + raw + b" " * (size - len(raw))

    def _finish(self) -> None:
        raw_len = len(self._header_bytes()) - 8
        if raw_len <= self.reserve:
            self._file.seek(0)
            self._file.write(self._header_bytes(self.reserve))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            return
        # The header outgrew the reservation: copy the data once behind a header of the right size.
        self._file.close()
        fd, moved = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, open(self._tmp, "rb") as src:
                out.write(self._header_bytes())
                src.seek(8 + self.reserve)
                shutil.copyfileobj(src, out, 1 << 24)
                out.flush()
                os.fsync(out.fileno())
            os.unlink(self._tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(moved)
            raise
        self._tmp = moved

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._finish()
            os.replace(self._tmp, self.path)
        except BaseException:
            self._discard()
            raise
        fsync_dir(self.path.parent)


def save_streaming(path: str | Path, items, metadata: dict[str, str] | None = None, reserve: int = 0) -> None:
    """Write the (key, tensor) pairs of the iterable `items` as they come (a generator streams)."""
    with SafetensorsWriter(path, metadata, reserve) as w:
        for key, tensor in items:
            w.add(key, tensor)
