"""Loaders every reader shares: a JSON list file, and a Hugging Face dataset (hub id or local)."""
from __future__ import annotations

import json
from pathlib import Path

from lora_vl.data.encode import BadRecord


def read_json_list(path: str | Path, what: str) -> list:
    """The records of a JSON list file; errors name the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise BadRecord(f"{path}: {what} file not found")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise BadRecord(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); expected a UTF-8 "
                        f"{what} file") from e
    except json.JSONDecodeError as e:
        raise BadRecord(f"{path}: not valid JSON ({e}); expected a {what} file") from e
    if not isinstance(records, list):
        raise BadRecord(f"{path}: expected a JSON list of records, got a JSON {type(records).__name__}")
    return records


def load_hf(path: str, split: str, revision: str | None):
    """A dataset split from a saved dataset folder, a json/jsonl/parquet file, or the hub."""
    import datasets  # heavy; only readers of HF datasets need it

    p = Path(path)
    if p.is_dir() and (p / "dataset_info.json").exists():
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise BadRecord(f"{path}: saved dataset has splits {sorted(ds)}, not {split!r}")
            return ds[split]
        return ds
    if p.is_file():
        kind = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(p.suffix)
        if kind is None:
            raise BadRecord(f"{path}: expected a .json, .jsonl or .parquet file")
        try:
            return datasets.load_dataset(kind, data_files=str(p), split="train")
        except Exception as e:  # pyarrow/json errors come in many types; name the file
            raise BadRecord(f"{path}: cannot be read as a {kind} dataset: {type(e).__name__}: {e}") from e
    if p.exists() or path.startswith((".", "/", "~")):
        raise BadRecord(f"{path}: a local path, but neither a saved dataset folder (no dataset_info.json) "
                        "nor a .json/.jsonl/.parquet file")
    try:
        return datasets.load_dataset(path, split=split, revision=revision)
    except Exception as e:  # hub errors come in many types; name the dataset and the likely cause
        raise OSError(f"could not load dataset {path!r} (split {split!r}): not a local path and the "
                      f"hub could not serve it (offline, gated or misspelled?): {type(e).__name__}: {e}") from e
