"""Read and write standard PEFT LoRA adapter directories without loading a base model.

PEFT 0.21 stores `base_model.model.<module>.lora_A.weight` (r x in) and `...lora_B.weight`
(out x r); modules_to_save copies are stored as `base_model.model.<module>.<param>` (no
`modules_to_save.default` infix). PEFT has no base-free reader, so this file is hand-written;
pattern lookup for rank_pattern/alpha_pattern reuses PEFT's own `get_pattern_key`.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from peft.utils.other import get_pattern_key
from safetensors import SafetensorError, safe_open

from lora_vl.errors import InputError
from lora_vl.handoff import open_adapter
from lora_vl.merge.stream import header_reserve, save_streaming

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
# Config features whose weights are not a plain B@A delta; merging them would be wrong silently.
_UNSUPPORTED = {"use_dora": True, "lora_bias": True, "fan_in_fan_out": True}


_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class MergeError(InputError):
    """Bad merge input; the message names the file, module or key and what was expected."""


@dataclass
class LoraFactors:
    """One module's delta: ΔW = scale · B @ A  (B: out x r, A: r x in)."""
    A: torch.Tensor
    B: torch.Tensor
    scale: float = 1.0

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.B.shape[0], self.A.shape[1])

    def delta(self, dtype: torch.dtype = torch.float64, out: torch.Tensor | None = None) -> torch.Tensor:
        """The dense d_out x d_in delta (float64 by default: for tests and references), into `out`
        if given."""
        # the scale on the small factor: no second pass over (nor second buffer of) d_out x d_in
        return torch.matmul(self.B.to(dtype) * self.scale, self.A.to(dtype), out=out)


@dataclass
class Adapter:
    """An adapter in memory: config, factors per module, modules_to_save tensors per key."""
    config: dict
    modules: dict[str, LoraFactors]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None


class AdapterFile:
    """A lazily read adapter dir: the config and the key index are read at once, tensors on demand.

    Lazy so that merging 7B-sized adapters holds only one module of each input at a time. Each
    read opens the file anew: safetensors maps the whole file per handle and the pages a read
    touches stay resident (and in RSS) as long as that handle or a tensor from it lives, so a
    long-lived handle would end up holding every input in RSS. The index (shapes, dtypes) is
    read from the header once.
    """

    def __init__(self, path: str | Path):
        self.adapter = open_adapter(path, role="merge input")  # readable config + safetensors header
        self.path, self.config = self.adapter.path, self.adapter.config
        self._check_config()
        self.weights_path = self.adapter.weights_path
        self._shapes, self._dtypes = self.adapter.shapes, self.adapter.dtypes
        self._index(list(self._shapes))

    def _check_config(self) -> None:
        for key, bad in _UNSUPPORTED.items():
            if self.config.get(key) == bad:
                raise MergeError(f"{self.path / CONFIG}: {key}={bad} is not supported by LoRA-space "
                                 "merging (expected a plain B@A adapter)")

    def _index(self, keys: list[str]) -> None:
        parts: dict[str, dict[str, str]] = {}
        self.extra_keys: dict[str, str] = {}  # name without prefix -> stored key
        for key in keys:
            name = key[len(PREFIX):] if key.startswith(PREFIX) else key
            m = _LORA_KEY.match(name)
            if m:
                parts.setdefault(m["module"], {})[m["ab"]] = key
            elif ".lora_" in name:
                raise MergeError(f"{self.weights_path}: key {key!r} is a LoRA tensor kind this merger "
                                 "does not support (expected only lora_A.weight / lora_B.weight)")
            else:
                self.extra_keys[name] = key
        for module, ab in parts.items():
            if set(ab) != {"A", "B"}:
                raise MergeError(f"{self.weights_path}: module {module!r} has lora_{''.join(ab)} "
                                 "but not both lora_A and lora_B")
        self._parts = parts

    @property
    def modules(self) -> list[str]:
        return sorted(self._parts)

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    def _tensors(self, *keys: str) -> list[torch.Tensor]:
        try:
            with safe_open(str(self.weights_path), framework="pt") as f:
                ts = [f.get_tensor(k) for k in keys]
        except (SafetensorError, OSError) as e:
            raise MergeError(f"{self.weights_path}: cannot read {', '.join(map(repr, keys))}: {e}") from e
        return ts  # finite values checked when the file was opened (`open_adapter`)

    def module_scale(self, module: str, rank: int) -> float:
        """PEFT's scaling for this module: alpha/r, or alpha/sqrt(r) with rsLoRA."""
        cfg = self.config
        r_key = get_pattern_key((cfg.get("rank_pattern") or {}).keys(), module)
        r = (cfg.get("rank_pattern") or {}).get(r_key, cfg.get("r", 8))
        if r != rank:
            raise MergeError(f"{self.path}: module {module!r} has rank {rank} in {WEIGHTS} but "
                             f"{CONFIG} says r={r}")
        a_key = get_pattern_key((cfg.get("alpha_pattern") or {}).keys(), module)
        alpha = (cfg.get("alpha_pattern") or {}).get(a_key, cfg.get("lora_alpha", 8))
        return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r

    def factors(self, module: str) -> LoraFactors:
        if module not in self._parts:
            raise MergeError(f"{self.path}: no LoRA module {module!r}")
        A, B = self._tensors(self._parts[module]["A"], self._parts[module]["B"])
        if A.dim() != 2 or B.dim() != 2 or B.shape[1] != A.shape[0]:
            raise MergeError(f"{self.weights_path}: module {module!r} has lora_A {tuple(A.shape)} and "
                             f"lora_B {tuple(B.shape)}; expected (r, in) and (out, r)")
        return LoraFactors(A, B, self.module_scale(module, A.shape[0]))

    def module_shape(self, module: str) -> tuple[int, int]:
        """(out, in) from the file header only, without reading the tensors."""
        a, b = self._shapes[self._parts[module]["A"]], self._shapes[self._parts[module]["B"]]
        return (b[0], a[-1])

    @property
    def dtype(self) -> torch.dtype:
        """The stored dtype of the LoRA factors (from the header)."""
        if not self._parts:
            return torch.float32
        key = next(iter(self._parts.values()))["A"]
        return _ST_DTYPES.get(self._dtypes[key], torch.float32)

    def extra(self, name: str) -> torch.Tensor:
        return self._tensors(self.extra_keys[name])[0]

    def load(self) -> Adapter:
        return Adapter(dict(self.config), {m: self.factors(m) for m in self.modules},
                       {n: self.extra(n) for n in self.extra_keys}, self.path)


def read_adapter(path: str | Path) -> Adapter:
    """Read a whole adapter dir into memory (checked: shapes, ranks, finite values)."""
    return AdapterFile(path).load()


def _rank_config(ranks: dict[str, int]) -> dict:
    """r / lora_alpha / patterns so that every module has its own rank and scaling exactly 1."""
    if not ranks:
        return {"r": 1, "lora_alpha": 1, "rank_pattern": {}, "alpha_pattern": {}}
    common = Counter(ranks.values()).most_common(1)[0][0]
    # Escaped full module names: PEFT matches pattern keys as `(.*\.)?(key)$`, so this is exact.
    pattern = {re.escape(m): r for m, r in sorted(ranks.items()) if r != common}
    return {"r": common, "lora_alpha": common, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
            "use_rslora": False}


def adapter_config(template: dict, ranks: dict[str, int], modules_to_save: list[str] | None,
                   base_model: str | None) -> dict:
    """A PEFT LoraConfig dict for modules of the given ranks, keeping the template's other (compatible) keys."""
    cfg = {k: v for k, v in template.items() if k not in ("target_modules", "exclude_modules")}
    cfg.update(_rank_config(ranks))
    cfg.update({"peft_type": "LORA", "target_modules": sorted(ranks), "modules_to_save": modules_to_save,
                "base_model_name_or_path": base_model, "inference_mode": True, "lora_dropout": 0.0,
                "layers_to_transform": None, "layers_pattern": None, "use_dora": False})
    return cfg


def module_tensors(module: str, f: LoraFactors, dtype: torch.dtype) -> list[tuple[str, torch.Tensor]]:
    """The stored lora_A / lora_B of one module, with the scaling folded into B (so scale 1 = alpha/r)."""
    B = f.B.to(dtype) if f.scale == 1.0 else (f.B.double() * f.scale).to(dtype)
    return [(f"{PREFIX}{module}.lora_A.weight", f.A.to(dtype)), (f"{PREFIX}{module}.lora_B.weight", B)]


def write_weights(path: str | Path, modules: Iterable[tuple[str, LoraFactors]], names: Iterable[str],
                  extra: dict[str, torch.Tensor] | None = None, dtype: torch.dtype = torch.float32) -> None:
    """Write adapter_model.safetensors atomically, one module at a time as `modules` yields them.

    `modules` may be a generator that merges as it goes: only the module being written is held.
    `names` are the modules that may come (they size the reserved header); `extra` comes first.
    """
    extra = {f"{PREFIX}{name}": t.to(dtype) for name, t in (extra or {}).items()}
    keys = [(f"{PREFIX}{m}.lora_{ab}.weight", 2) for m in names for ab in "AB"]
    keys += [(k, t.dim()) for k, t in extra.items()]

    def items():
        yield from extra.items()
        for m, f in modules:
            yield from module_tensors(m, f, dtype)
    save_streaming(path, items(), metadata={"format": "pt"}, reserve=header_reserve(keys, {"format": "pt"}))


def write_config(directory: str | Path, config: dict) -> None:
    (Path(directory) / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_adapter(directory: str | Path, config: dict, modules: dict[str, LoraFactors],
                  extra: dict[str, torch.Tensor] | None = None, dtype: torch.dtype = torch.float32) -> None:
    """Write factors (with scaling folded into B, so scale 1 = alpha/r) into `directory`.

    `directory` is expected to be fresh (an `atomic_dir` temp dir); the weights file itself is
    also written beside and renamed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_weights(directory / WEIGHTS, modules.items(), list(modules), extra, dtype)
    write_config(directory, config)
