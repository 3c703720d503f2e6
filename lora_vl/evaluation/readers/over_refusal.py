"""Benign prompts that look harmful: XSTest (text) and MOSSBench (image + text)."""
from __future__ import annotations

from pathlib import Path

from lora_vl.evaluation.items import EvalItem
from lora_vl.evaluation.readers.registry import benchmark_reader
from lora_vl.evaluation.readers.source import find_file, is_local, load_rows, read_json, row_image


@benchmark_reader("xstest", category="over_refusal", subsets="safe (default) | unsafe | all",
                  subset_categories={"unsafe": "text_safety"},
                  help="XSTest prompts (Paul/XSTest or xstest_prompts.csv)")
def read_xstest(spec) -> list[EvalItem]:
    """Paul/XSTest (250 safe + 200 unsafe): id, prompt, type, label, focus, note.
    subset: safe (default; over-refusal), unsafe (contrast prompts) or all."""
    want = spec.subset or "safe"
    rows, _ = load_rows(spec, spec.name, ["xstest_prompts.csv", "xstest_v2_prompts.csv"],
                        split=spec.split or "train")
    return [EvalItem(id=str(r["id"]), prompt=r["prompt"], benchmark=spec.name, category=str(r["type"]),
                     meta={"label": r["label"], "focus": r.get("focus")})
            for r in rows if want == "all" or r["label"] == want]


MOSS_FLAGS = ("over", "human", "child", "syn", "ocr", "harm")


@benchmark_reader("mossbench", category="over_refusal",
                  help="MOSSBench: a clone (data/images_information/information.json + data/images/) or "
                       "AIcell/MOSSBench (config oversensitivity | contrast, split train)")
def read_mossbench(spec) -> list[EvalItem]:
    """MOSSBench, 300 benign image + question pairs meant to trigger oversensitivity.

    Clone layout: data/images_information/information.json, an object keyed by pid of {image
    ('images/<pid>.png', under data/), question, short description, description, pid, metadata:
    {over ('type 1'..'type 3': exaggerated risk, negated harm, counterintuitive interpretation),
    human, child, syn, ocr (0/1), harm (a list of harm types)}}. Hub layout (AIcell/MOSSBench,
    configs oversensitivity | contrast, split train): the same fields with metadata flattened to
    `metadata_*` columns and the image decoded in `decoded_image`. Items are grouped by stimulus
    type (metadata over)."""
    if is_local(spec.source) and Path(spec.source).expanduser().is_dir():
        path = find_file(spec.source, ["information.json"], spec.name)
        rows = list(read_json(path, spec.name).values())
        folder = path.parent.parent  # image paths are relative to data/
    else:
        rows, folder = load_rows(spec, spec.name, ["*.parquet", "*.json"], config=spec.config or "oversensitivity",
                                 split=spec.split or "train")
    items = []
    for r in rows:
        meta = r.get("metadata") or {k: r.get(f"metadata_{k}") for k in MOSS_FLAGS}
        image = row_image(r, folder, "decoded_image", ("",)) or row_image(r, folder, "image", ("",))
        items.append(EvalItem(id=str(r["pid"]), prompt=r["question"], image=image, benchmark=spec.name,
                              category=str(meta.get("over") or "all"),
                              meta={"harm": meta.get("harm"), "short_description": r.get("short description"),
                                    **{k: meta.get(k) for k in ("human", "child", "syn", "ocr")}}))
    return items
