"""Benign prompts that look harmful: XSTest (text) and MOSSBench (image + text)."""
from __future__ import annotations

from lora_vl.evaluation.items import EvalItem
from lora_vl.evaluation.readers.source import load_rows, resolve_image


def read_xstest(spec) -> list[EvalItem]:
    """Paul/XSTest (250 safe + 200 unsafe): id, prompt, type, label, focus, note.
    subset: safe (default; over-refusal), unsafe (contrast prompts) or all."""
    want = spec.subset or "safe"
    rows, _ = load_rows(spec, spec.name, ["xstest_prompts.csv", "xstest_v2_prompts.csv"],
                        split=spec.split or "train")
    return [EvalItem(id=str(r["id"]), prompt=r["prompt"], benchmark=spec.name, category=str(r["type"]),
                     meta={"label": r["label"], "focus": r.get("focus")})
            for r in rows if want == "all" or r["label"] == want]


def read_mossbench(spec) -> list[EvalItem]:
    """AIcell/MOSSBench, split 'oversensitivity' (300 benign image+prompt pairs): pid, question,
    image, short description, description, metadata {over, human, child, syn, ocr, harm}.
    Field names follow the dataset card as we know it; verify against your copy."""
    rows, folder = load_rows(spec, spec.name, ["data.json", "oversensitivity.json", "*.parquet"],
                             split=spec.split or "oversensitivity")
    items = []
    for r in rows:
        image = r["image"]
        if isinstance(image, str):
            image = resolve_image(folder, image, ("", "images"))
        meta = r.get("metadata") or {}
        items.append(EvalItem(id=str(r["pid"]), prompt=r["question"], image=image, benchmark=spec.name,
                              category=f"harm{meta.get('harm')}" if meta.get("harm") is not None else "all"))
    return items
