"""Readers for the safety-training formats.

- `vlguard` (ys-zong/VLGuard train.json / test.json) → `Sample`s for SFT: a JSON list of
  {"id", "image" (path relative to an image folder), "safe": bool, "harmful_category",
   "harmful_subcategory", "instr-resp": [{"safe_instruction" | "unsafe_instruction" |
   "instruction": str, "response": str}]}. Each instruction/response entry becomes one
  single-turn sample; safe images carry a safe and an unsafe instruction, unsafe images an
  "instruction".
- `spa_vl` (sqrti/SPA-VL) → `PreferencePair`s: columns image, question, chosen, rejected.
- `pku_saferlhf` (PKU-Alignment/PKU-SafeRLHF) → text-only `PreferencePair`s: prompt,
  response_0, response_1, safer_response_id (the safety preference, not the helpfulness one).

Structural errors (a record without the keys its schema requires) stop the read with the
record named; per-record faults that a recipe may skip (missing image, empty or identical
responses) are found later by the data sets, which count skips.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_vl.data.encode import IMAGE_PLACEHOLDER, BadRecord
from lora_vl.data.formats import data_format
from lora_vl.data.sample import Sample
from lora_vl.data.sources import image_path, load_hf, local_folder, read_json_list

INSTRUCTION_KEYS = ("safe_instruction", "unsafe_instruction", "instruction")


@dataclass
class PreferencePair:
    id: str
    prompt: str                 # user turn, with an <image> placeholder when there is an image
    chosen: str
    rejected: str
    images: list[Any] = field(default_factory=list)   # file paths or PIL images
    source: str = ""

    @property
    def where(self) -> str:
        return f"{self.source} record {self.id!r}"


def _user_turn(text: str, has_image: bool) -> str:
    return f"{IMAGE_PLACEHOLDER}\n{text}" if has_image and IMAGE_PLACEHOLDER not in text else text




@data_format("vlguard", holds="samples", image_folder=True,
             help="VLGuard train.json: id, image, safe, instr-resp")
def read_vlguard(path: str | Path, *, image_folder: str | Path | None = None, split: str = "train",
                 revision: str | None = None) -> list[Sample]:
    path = Path(path)
    folder = Path(image_folder) if image_folder else path.parent
    out = []
    for i, rec in enumerate(read_json_list(path, "VLGuard JSON")):
        out += _vlguard_record(rec, i, path, folder)
    return out


def _vlguard_record(rec, index: int, path: Path, folder: Path) -> list[Sample]:
    rid = str(rec.get("id", index)) if isinstance(rec, dict) else str(index)
    where = f"{path} record {rid!r}"
    if not isinstance(rec, dict) or not isinstance(rec.get("instr-resp"), list) or not rec["instr-resp"]:
        raise BadRecord(f"{where}: expected a non-empty 'instr-resp' list")
    image = rec.get("image")
    if not isinstance(image, str) or not image:
        raise BadRecord(f"{where}: expected an 'image' path")
    samples = []
    for j, entry in enumerate(rec["instr-resp"]):
        keys = [k for k in INSTRUCTION_KEYS if isinstance(entry, dict) and k in entry]
        if len(keys) != 1 or not isinstance(entry.get("response"), str):
            raise BadRecord(f"{where}: instr-resp[{j}] needs exactly one of {', '.join(INSTRUCTION_KEYS)} "
                            "and a string 'response'")
        messages = [{"role": "user", "content": _user_turn(str(entry[keys[0]]), True)},
                    {"role": "assistant", "content": entry["response"]}]
        samples.append(Sample(id=f"{rid}/{j}:{keys[0]}", messages=messages, images=[image_path(image, folder, where)],
                              source=str(path)))
    return samples


def _image_value(value, base: Path | None, where: str):
    """An HF image cell (PIL image, {'bytes','path'} dict, or a path string) → PIL image or path."""
    from PIL import Image

    if value is None or isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        value = value.get("path")
    if isinstance(value, str) and value:
        return image_path(value, base, where)
    return None


def _require(ds, columns: set[str], path: str) -> None:
    missing = columns - set(ds.column_names)
    if missing:
        raise BadRecord(f"{path}: dataset has columns {ds.column_names}, missing {sorted(missing)}")


@data_format("spa_vl", holds="pairs", image_folder=True,
             help="SPA-VL preference pairs: image, question, chosen, rejected (DPO only)")
def read_spa_vl(path: str, *, image_folder: str | None = None, split: str = "train",
                revision: str | None = None) -> list[PreferencePair]:
    ds = load_hf(path, split, revision)
    _require(ds, {"question", "chosen", "rejected"}, path)
    base = Path(image_folder) if image_folder else local_folder(path)
    out = []
    for i, row in enumerate(ds):
        image = _image_value(row.get("image"), base, f"{path} record {row.get('id', i)!r}")
        out.append(PreferencePair(id=str(row.get("id", i)), prompt=_user_turn(row["question"] or "", image is not None),
                                  chosen=row["chosen"] or "", rejected=row["rejected"] or "",
                                  images=[image] if image is not None else [], source=path))
    return out


@data_format("pku_saferlhf", holds="pairs", image_folder=False,
             help="PKU-SafeRLHF text pairs: prompt, response_0/1, safer_response_id (DPO only)")
def read_pku_saferlhf(path: str, *, image_folder: str | None = None, split: str = "train",
                      revision: str | None = None) -> list[PreferencePair]:
    ds = load_hf(path, split, revision)
    _require(ds, {"prompt", "response_0", "response_1", "safer_response_id"}, path)
    out = []
    for i, row in enumerate(ds):
        safer = row["safer_response_id"]
        if safer not in (0, 1):
            raise BadRecord(f"{path} record {i}: safer_response_id is {safer!r}, expected 0 or 1")
        out.append(PreferencePair(id=str(row.get("id", i)), prompt=row["prompt"] or "",
                                  chosen=row[f"response_{safer}"] or "",
                                  rejected=row[f"response_{1 - safer}"] or "", source=path))
    return out

