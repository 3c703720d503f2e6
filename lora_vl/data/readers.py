"""Readers for the real training-data formats → `Sample`.

- `llava_json`: LLaVA-Pretrain / LLaVA-Instruct / VLGuard-converted files: a JSON list of
  {"id", "image" (path relative to an image folder; optional; str or list),
   "conversations": [{"from": "human"|"gpt"|"system", "value": str with "<image>"}]}.
- `hf_messages`: a Hugging Face dataset (hub id, saved dataset dir, or json/jsonl/parquet
  file) with a `messages` column ([{role, content}], content a string or a list of
  {"type": "image"} / {"type": "text", "text": ...} parts) and an `images` column.
"""
from __future__ import annotations

from pathlib import Path

from lora_vl.data.encode import IMAGE_PLACEHOLDER, BadRecord
from lora_vl.data.formats import data_format
from lora_vl.data.sample import Sample
from lora_vl.data.sources import image_path, load_hf, local_folder, read_json_list

ROLE_FROM = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
             "system": "system"}


@data_format("llava_json", holds="samples", image_folder=True,
             help="LLaVA JSON list: id, image, conversations [{from: human|gpt|system, value}]")
def read_llava_json(path: str | Path, *, image_folder: str | Path | None = None, split: str = "train",
                    revision: str | None = None) -> list[Sample]:
    path = Path(path)
    records = read_json_list(path, "LLaVA JSON")
    folder = Path(image_folder) if image_folder else path.parent
    source = str(path)
    return [_llava_record(r, i, source, folder) for i, r in enumerate(records)]


def _llava_record(rec, index: int, source: str, folder: Path) -> Sample:
    """One record; the happy path builds no error text (558k records are read on every run)."""
    rid = str(rec.get("id", index)) if isinstance(rec, dict) else str(index)
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
        raise BadRecord(f"{source} record {rid!r}: expected an object with a 'conversations' list")
    messages = []
    for j, turn in enumerate(rec["conversations"]):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise BadRecord(f"{source} record {rid!r}: turn {j} needs a string 'value'")
        role = ROLE_FROM.get(turn.get("from"))
        if role is None:
            raise BadRecord(f"{source} record {rid!r}: turn {j} has 'from' {turn.get('from')!r}; expected one of "
                            f"{sorted(ROLE_FROM)}")
        messages.append({"role": role, "content": turn["value"]})
    image = rec.get("image")
    if image is None:
        return Sample(id=rid, messages=messages, images=[], source=source)
    where = f"{source} record {rid!r}"
    return Sample(id=rid, messages=messages, images=[image_path(p, folder, where) for p in _image_paths(image, where)],
                  source=source)


def _image_paths(image, where: str) -> list[str]:
    """LLaVA's `image`: absent, one relative path, or a list of them."""
    if image is None:
        return []
    paths = [image] if isinstance(image, str) else image
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise BadRecord(f"{where}: 'image' is {image!r}; expected a relative path string or a list of them")
    return paths


@data_format("hf_messages", holds="samples", image_folder=False,
             help="HF dataset (hub id, saved folder, json/jsonl/parquet) with messages [+ images] columns")
def read_hf_messages(path: str, *, image_folder: str | None = None, split: str = "train",
                     revision: str | None = None) -> list[Sample]:
    ds = load_hf(path, split, revision)
    missing = {"messages"} - set(ds.column_names)
    if missing:
        raise BadRecord(f"{path}: dataset has columns {ds.column_names}, expected 'messages' (+ 'images')")
    folder, out = local_folder(path), []
    for i, row in enumerate(ds):
        rid = str(row.get("id", i))
        where = f"{path} record {rid!r}"
        if not isinstance(row["messages"], list):
            raise BadRecord(f"{where}: 'messages' is {type(row['messages']).__name__}; expected a list")
        messages = []
        for j, m in enumerate(row["messages"]):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise BadRecord(f"{where}: message {j} needs 'role' and 'content'")
            messages.append({"role": m["role"], "content": _flatten_content(m["content"], where)})
        images = [image_path(im, folder, where) if isinstance(im, str) else im for im in row.get("images") or []]
        out.append(Sample(id=rid, messages=messages, images=images, source=path))
    return out


def _flatten_content(content, where: str) -> str:
    """Structured content parts → text with `<image>` placeholders in place."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRecord(f"{where}: message content is {type(content).__name__}; expected text or a list of parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            parts.append(IMAGE_PLACEHOLDER)
        elif kind == "text":
            parts.append(part.get("text") or "")
        else:
            raise BadRecord(f"{where}: content part of type {kind!r}, expected 'image' or 'text'")
    return "\n".join(parts)
