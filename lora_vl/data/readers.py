"""Readers for the real training-data formats → `Sample`.

- `llava_json`: LLaVA-Pretrain / LLaVA-Instruct / VLGuard-converted files: a JSON list of
  {"id", "image" (path relative to an image folder; optional; str or list),
   "conversations": [{"from": "human"|"gpt"|"system", "value": str with "<image>"}]}.
- `hf_messages`: a Hugging Face dataset (hub id, saved dataset dir, or json/jsonl/parquet
  file) with a `messages` column ([{role, content}], content a string or a list of
  {"type": "image"} / {"type": "text", "text": ...} parts) and an `images` column.
"""
from __future__ import annotations

import json
from pathlib import Path

from lora_vl.data.encode import IMAGE_PLACEHOLDER, BadRecord
from lora_vl.data.sample import Sample

ROLE_FROM = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
             "system": "system"}


def read_json_list(path: Path, what: str) -> list:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadRecord(f"{path}: not valid JSON ({e})") from e
    if not isinstance(records, list):
        raise BadRecord(f"{path}: expected a JSON list of records")
    return records


def read_llava_json(path: str | Path, image_folder: str | Path | None = None) -> list[Sample]:
    path = Path(path)
    records = read_json_list(path, "LLaVA JSON")
    folder = Path(image_folder) if image_folder else path.parent
    return [_llava_record(r, i, path, folder) for i, r in enumerate(records)]


def _llava_record(rec, index: int, path: Path, folder: Path) -> Sample:
    rid = str(rec.get("id", index)) if isinstance(rec, dict) else str(index)
    where = f"{path} record {rid!r}"
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
        raise BadRecord(f"{where}: expected a 'conversations' list")
    messages = []
    for j, turn in enumerate(rec["conversations"]):
        role = ROLE_FROM.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise BadRecord(f"{where}: turn {j} needs 'from' in human/gpt/system and a string 'value'")
        messages.append({"role": role, "content": turn["value"]})
    image = rec.get("image")
    images = [] if image is None else [folder / p for p in ([image] if isinstance(image, str) else image)]
    return Sample(id=rid, messages=messages, images=images, source=str(path))


def read_hf_messages(path: str, split: str = "train", revision: str | None = None) -> list[Sample]:
    ds = load_hf(path, split, revision)
    missing = {"messages"} - set(ds.column_names)
    if missing:
        raise BadRecord(f"{path}: dataset has columns {ds.column_names}, expected 'messages' (+ 'images')")
    out = []
    for i, row in enumerate(ds):
        rid = str(row.get("id", i))
        messages = [{"role": m["role"], "content": _flatten_content(m["content"], f"{path} record {rid!r}")}
                    for m in row["messages"]]
        out.append(Sample(id=rid, messages=messages, images=list(row.get("images") or []), source=path))
    return out


def _flatten_content(content, where: str) -> str:
    """Structured content parts → text with `<image>` placeholders in place."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        kind = part.get("type")
        if kind == "image":
            parts.append(IMAGE_PLACEHOLDER)
        elif kind == "text":
            parts.append(part.get("text") or "")
        else:
            raise BadRecord(f"{where}: content part of type {kind!r}, expected 'image' or 'text'")
    return "\n".join(parts)


def load_hf(path: str, split: str, revision: str | None):
    import datasets

    p = Path(path)
    if p.is_dir() and (p / "dataset_info.json").exists():
        ds = datasets.load_from_disk(str(p))
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    if p.is_file():
        kind = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(p.suffix)
        if kind is None:
            raise BadRecord(f"{path}: expected a .json, .jsonl or .parquet file")
        return datasets.load_dataset(kind, data_files=str(p), split="train")
    try:
        return datasets.load_dataset(path, split=split, revision=revision)
    except Exception as e:  # hub errors come in many types; name the dataset and the likely cause
        raise OSError(f"could not load dataset {path!r} (split {split!r}): not a local path and the "
                      f"hub could not serve it (offline, gated or misspelled?): {e}") from e


# bottom import: safety_readers builds on read_json_list / load_hf above
from lora_vl.data.safety_readers import read_vlguard  # noqa: E402

READERS = {"llava_json": read_llava_json, "hf_messages": read_hf_messages, "vlguard": read_vlguard}
IMAGE_FOLDER_FORMATS = ("llava_json", "vlguard")
