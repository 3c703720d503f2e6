"""What one stage hands the next: an adapter directory, its manifest, and the base it was made on.

The one owner of: manifests (make / write / read), recognising a PEFT adapter directory (config
readable, weights a readable safetensors file of finite tensors whose ranks agree with the
config), the same-path rule, the output rule (an output never overlaps an input), the base
check, and the `LoraConfig` a recipe's LoRA settings build. Training (adapt, safety), merge, export and
evaluation all go through here, so a check is written once and cannot drift.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from peft import LoraConfig
from peft.utils.other import get_pattern_key
from safetensors import SafetensorError, safe_open

from lora_vl.artifacts import atomic_write_json, git_commit, package_versions
from lora_vl.card import write_model_card
from lora_vl.errors import InputError

MANIFEST = "manifest.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class HandoffError(InputError):
    """An artifact handed between stages is missing, unreadable, or made on another base."""


# --- manifests ---------------------------------------------------------------------------

def make_manifest(kind: str, recipe: dict, **fields: Any) -> dict:
    """A manifest: what was made, from what, with which code."""
    return {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "recipe": recipe,
            "packages": package_versions(), "git_commit": git_commit(), **fields}


def write_manifest(directory: str | Path, manifest: dict) -> None:
    """The manifest, and the Hub model card (README.md) made from it: every artifact directory
    can be uploaded as it is (`lora-vl push`)."""
    atomic_write_json(Path(directory) / MANIFEST, manifest)
    write_model_card(directory, manifest)


def read_json_file(path: str | Path, what: str) -> Any:
    """A small JSON file (config, manifest); errors name the file and what it should be."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise HandoffError(f"{path}: {what} not found") from e
    except UnicodeDecodeError as e:
        raise HandoffError(f"{path}: not UTF-8 text; expected a JSON {what}") from e
    except json.JSONDecodeError as e:
        raise HandoffError(f"{path}: corrupt {what} (not valid JSON: {e})") from e


def read_manifest(directory: str | Path, required: bool = True) -> dict | None:
    """The manifest of a lora_vl artifact; None if absent and not `required`."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        if required:
            raise HandoffError(f"{path}: no manifest.json (is {directory} an artifact of lora_vl?)")
        return None
    manifest = read_json_file(path, "manifest")
    if not isinstance(manifest, dict):
        raise HandoffError(f"{path}: expected a JSON object")
    return manifest


# --- the same-path rule and the base check ------------------------------------------------

def same_location(a: str | Path, b: str | Path) -> bool:
    """Two model references name the same thing: equal real paths when both exist locally,
    else equal strings up to a trailing slash (hub ids)."""
    a, b = str(a), str(b)
    if os.path.exists(a) and os.path.exists(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return a.rstrip("/") == b.rstrip("/")


def _inside(path: str, folder: str) -> bool:
    return path != folder and path.startswith(folder.rstrip(os.sep) + os.sep)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _check_writable(output: Path) -> None:
    """The output's folder (or the nearest existing one above it) accepts new files: probed by
    creating one, since permission bits do not tell (root, read-only mounts)."""
    folder = _nearest_existing(output)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".lora_vl_probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise HandoffError(f"{output}: output folder cannot be written ({folder}: {e.strerror}); "
                           "expected a writable location") from e


def _check_not_inside_run(output: Path) -> None:
    """An output never goes inside another run's checkpoint or adapter folder."""
    for folder in [p for p in output.absolute().parents if p.exists()]:
        checkpoint = folder.name.startswith("step-") and (folder / "state.json").is_file()
        what = "a training checkpoint" if checkpoint else \
            "an adapter" if (folder / ADAPTER_CONFIG).is_file() else None
        if what:
            raise HandoffError(f"{output}: lies inside {folder}, {what} of another run; choose an output "
                               "folder outside it")


def check_output(output: str | Path, inputs: list[tuple[str, str | Path | None]], *, command: str,
                 replaces: tuple[str, ...] | None = None, overwrite: bool = False,
                 overwrite_flag: str = "overwrite=true", marker: str = MANIFEST) -> Path:
    """The one output rule of every writing command, checked before any work.

    The output is a folder (or will be) that can be written, lies in no other run's checkpoint
    or adapter, and neither equals, contains nor lies inside any local input (`inputs`: (role,
    path); hub ids and None are skipped). A command that `replaces` its output folder as a whole
    may do so only with `overwrite`, and only a previous output of its own: a folder whose
    `marker` file names one of the kinds in `replaces` (or an empty one)."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise HandoffError(f"{out}: exists and is a file; expected an output folder (lora-vl {command} writes a "
                           "folder there)")
    _check_writable(out)
    _check_not_inside_run(out)
    real_out = os.path.realpath(out)
    for role, given in inputs:
        if given is None or not os.path.exists(given):
            continue
        real_in = os.path.realpath(given)
        relation = "is" if real_in == real_out else "contains" if _inside(real_in, real_out) else \
            "lies inside" if _inside(real_out, real_in) else None
        if relation:
            raise HandoffError(f"{out}: the output {relation} the {role} {given}; lora-vl {command} would "
                               "write over its own input; choose an output folder apart from every input")
    if replaces is not None and out.exists() and any(out.iterdir()):
        record = read_json_file(out / marker, marker) if (out / marker).is_file() else None
        held = record.get("kind") if isinstance(record, dict) else None
        if not overwrite:
            what = "an adapter" if (out / ADAPTER_WEIGHTS).exists() or (out / ADAPTER_CONFIG).exists() else \
                f"a {held}" if held else "files"
            raise HandoffError(f"{out}: already holds {what}; set {overwrite_flag} to replace it")
        if held not in replaces:
            raise HandoffError(f"{out}: {overwrite_flag} replaces only a previous output of lora-vl {command} "
                               f"(its {marker} says kind {' or '.join(replaces)}), but this folder holds "
                               f"{'a ' + held if held else 'other files'}; choose another output")
    return out


@dataclass
class AdapterDir:
    """A PEFT LoRA adapter directory as a stage receives it (weights indexed, not loaded)."""
    path: Path
    config: dict
    manifest: dict | None
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]

    @property
    def weights_path(self) -> Path:
        return self.path / ADAPTER_WEIGHTS

    def recorded_bases(self) -> dict[str, str]:
        """Every place the adapter names its base: {where: base}."""
        out = {}
        if self.manifest and self.manifest.get("base"):
            out[f"{self.path / MANIFEST} 'base'"] = str(self.manifest["base"])
        if self.config.get("base_model_name_or_path"):
            out[f"{self.path / ADAPTER_CONFIG} 'base_model_name_or_path'"] = str(self.config["base_model_name_or_path"])
        return out

    @property
    def base(self) -> str | None:
        """The base it was trained on: the manifest's record first (it is the kit's own)."""
        return next(iter(self.recorded_bases().values()), None)

    def check_base(self, base: str | Path, role: str = "adapter") -> None:
        """Refuse an adapter made on another base: a LoRA only fits the weights it was trained on."""
        for where, made_on in self.recorded_bases().items():
            if not same_location(made_on, base):
                raise HandoffError(f"{role} {self.path}: trained on base {made_on!r} ({where}), but the base "
                                   f"here is {str(base)!r}; a LoRA adapter only fits the base it was trained on")


def open_adapter(path: str | Path, role: str = "adapter") -> AdapterDir:
    """Open an adapter directory, checking what every consumer needs before any model loads."""
    path = Path(path)
    if not path.is_dir():
        raise HandoffError(f"{role} {path}: no such directory; expected a PEFT adapter directory "
                           f"({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})")
    if not (path / ADAPTER_CONFIG).is_file():
        raise HandoffError(f"{role} {path}: no {ADAPTER_CONFIG}; expected a PEFT adapter directory "
                           "(made by `lora-vl adapt`, `safety` or `merge`)")
    config = read_json_file(path / ADAPTER_CONFIG, "adapter config")
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise HandoffError(f"{path / ADAPTER_CONFIG}: expected a LoRA adapter config (peft_type LORA)")
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        hint = " (only adapter_model.bin found; weights are read only from safetensors)" \
            if (path / "adapter_model.bin").exists() else ""
        raise HandoffError(f"{weights}: adapter weights file is missing{hint}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            dtypes = {k: f.get_slice(k).get_dtype() for k in shapes}
            check_ranks(weights, config, shapes)
            check_finite(weights, ((k, f.get_tensor(k)) for k in shapes))  # one tensor held at a time
    except (SafetensorError, OSError, ValueError) as e:
        raise HandoffError(f"{weights}: not a readable safetensors file ({e}); expected the adapter "
                           "weights written by PEFT") from e
    return AdapterDir(path, config, read_manifest(path, required=False), shapes, dtypes)


def check_finite(path: str | Path, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Weights entering a stage hold no NaN/Inf (a diverged run's output would train or score
    as if it were fine); the error names the file and the first bad tensor."""
    for key, t in tensors:
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise HandoffError(f"{path}: tensor {key!r} holds {bad} NaN/Inf value(s); expected finite "
                               "weights (was it written by a run whose loss diverged?)")


def check_ranks(weights: Path, config: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """Each LoRA module's stored rank is the one its config gives (r, or its rank_pattern entry):
    PEFT would otherwise fail deep inside loading with a size-mismatch traceback."""
    pattern = config.get("rank_pattern") or {}
    for key, shape in shapes.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        r = pattern.get(get_pattern_key(pattern.keys(), module), config.get("r", 8))
        if shape[0] != r:
            raise HandoffError(f"{weights}: tensor {key!r} has rank {shape[0]}, but "
                               f"{weights.parent / ADAPTER_CONFIG} says r={r}; expected the config saved "
                               "with these weights")


# --- the LoRA configuration of a recipe ---------------------------------------------------

def lora_config(settings, target_modules: str | list[str], modules_to_save: list[str] | None = None) -> LoraConfig:
    """The `LoraConfig` of a recipe's `lora:` section (r, alpha, dropout, rslora)."""
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      use_rslora=settings.rslora, target_modules=target_modules, bias="none",
                      modules_to_save=modules_to_save)
