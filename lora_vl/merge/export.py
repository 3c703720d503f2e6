"""`lora-vl merge export`: fold an adapter into its base (this is the one place the base is loaded).

--format full:     base + ΔW (+ the adapter's modules_to_save copies) as a standard checkpoint
--format baked:    for servers that reject modules_to_save: <output>/base is the base with the
                   adapter's projector copied in, <output>/adapter the LoRA-only adapter over it
--fold-into nf4:   fold into the NF4 round-trip (quantize + dequantize, bitsandbytes) of the
                   language-model linear weights, i.e. the weights a QLoRA adapter was trained against
The folding itself is PEFT's merge_and_unload; this file only chooses the base weights and formats.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from lora_vl.artifacts import atomic_dir
from lora_vl.handoff import check_output, make_manifest, write_manifest
from lora_vl.merge.io import AdapterFile, MergeError, adapter_config, read_adapter, write_adapter
from lora_vl.models.load import DTYPES, NO_HUB_KERNELS, skips_quantization

# Files beside a local base checkpoint that a standard checkpoint needs (tokenizer, processor).
_ASSET_SUFFIXES = (".model", ".txt", ".jinja")
_ASSET_NAMES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
                "processor_config.json", "chat_template.json", "generation_config.json", "added_tokens.json")


def load_base(base: str):
    """The base model in float32 through the standard auto classes (local path or hub id)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
    config = AutoConfig.from_pretrained(base)
    cls = AutoModelForImageTextToText if hasattr(config, "vision_config") else AutoModelForCausalLM
    return cls.from_pretrained(base, dtype=torch.float32, **NO_HUB_KERNELS).eval()


def nf4_roundtrip(weight: torch.Tensor, quant_dtype: torch.dtype = torch.bfloat16, blocksize: int = 64,
                  double_quant: bool = True) -> torch.Tensor:
    """dequantize(quantize_nf4(W)) as bitsandbytes computes it, from W in the loading dtype."""
    import bitsandbytes.functional as bnbf
    q, state = bnbf.quantize_4bit(weight.to(quant_dtype), blocksize=blocksize,
                                  compress_statistics=double_quant, quant_type="nf4")
    return bnbf.dequantize_4bit(q, state).to(weight.dtype)


def quantizable_linears(model) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not skips_quantization(n)]


def to_nf4_weights(model, **kw) -> int:
    """Replace every quantizable linear weight by its NF4 round-trip; returns how many."""
    layers = quantizable_linears(model)
    with torch.no_grad():
        for _, lin in layers:
            lin.weight.copy_(nf4_roundtrip(lin.weight, **kw))
    return len(layers)


def copy_assets(base: str, directory: Path) -> None:
    """Tokenizer/processor files of a local base; for a hub id, let transformers fetch them."""
    src = Path(base)
    if src.is_dir():
        for p in src.iterdir():
            if p.is_file() and (p.name in _ASSET_NAMES or p.suffix in _ASSET_SUFFIXES):
                shutil.copy2(p, directory / p.name)
        return
    try:
        from transformers import AutoProcessor
        AutoProcessor.from_pretrained(base).save_pretrained(directory)
    except Exception as e:  # noqa: BLE001 - a missing processor must not lose the weights
        print(f"export: note: no processor/tokenizer saved for {base!r} ({e})")


def fold_full(model, adapter: Path):
    """base + ΔW with the adapter's saved modules, via PEFT."""
    from peft import PeftModel
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


def bake_projector(model, adapter: AdapterFile) -> int:
    """Copy the adapter's modules_to_save tensors into the base model's parameters."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in adapter.extra_keys:
            if name not in params or params[name].shape != adapter.extra(name).shape:
                raise MergeError(f"{adapter.weights_path}: saved tensor {name!r} has no parameter of that "
                                 "name and shape in the base model")
            params[name].copy_(adapter.extra(name))
    return len(adapter.extra_keys)


def write_lora_only(adapter: Path, directory: Path, base_dir: Path) -> None:
    a = read_adapter(adapter)
    cfg = adapter_config(a.config, {m: f.rank for m, f in a.modules.items()}, None, str(base_dir.resolve()))
    write_adapter(directory, cfg, a.modules, None, a.modules[next(iter(a.modules))].A.dtype)


def export(adapter: str, base: str, output: str, fmt: str = "full", fold_into: str = "original",
           dtype: str = "bfloat16", overwrite: bool = False, allow_other_base: bool = False) -> Path:
    out = check_output(output, [("adapter", adapter), ("base", base)], command="merge export",
                       replaces=("exported_checkpoint",), overwrite=overwrite, overwrite_flag="--overwrite")
    af = AdapterFile(adapter)
    if not allow_other_base:  # --allow-other-base: the same model stored elsewhere
        af.adapter.check_base(base)
    model = load_base(base)
    n_nf4 = to_nf4_weights(model) if fold_into == "nf4" else 0
    manifest = make_manifest("exported_checkpoint", {"adapter": adapter, "base": base, "format": fmt,
                                                     "fold_into": fold_into, "dtype": dtype},
                             parents=[{"path": str(af.path.resolve()), "base_model": af.base_model}],
                             nf4_linears=n_nf4)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if fmt == "full":
            fold_full(model, af.path).to(DTYPES[dtype]).save_pretrained(tmp)
            copy_assets(base, tmp)
        else:
            manifest["baked_tensors"] = bake_projector(model, af)
            model.to(DTYPES[dtype]).save_pretrained(tmp / "base")
            copy_assets(base, tmp / "base")
            write_lora_only(af.path, tmp / "adapter", out / "base")
        write_manifest(tmp, manifest)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-vl merge export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True, help="adapter directory (e.g. a merged adapter)")
    p.add_argument("--base", required=True, help="base model: local checkpoint path or hub id")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--format", choices=["full", "baked"], default="full",
                   help="full: merged checkpoint; baked: base with projector baked in + LoRA-only adapter")
    p.add_argument("--fold-into", choices=["original", "nf4"], default="original",
                   help="fold into the 16-bit base weights or their NF4 round-trip (what QLoRA trained on)")
    p.add_argument("--dtype", choices=list(DTYPES), default="bfloat16", help="stored dtype")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--allow-other-base", action="store_true",
                   help="accept a --base that differs from the adapter's base_model_name_or_path")
    return p


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    out = export(a.adapter, a.base, a.output, a.format, a.fold_into, a.dtype, a.overwrite, a.allow_other_base)
    print(f"exported to {out}")
    return 0
