"""Loaders every reader shares: a JSON list file, a Hugging Face dataset (hub id or local), and
where a record's image path points."""
from __future__ import annotations

import codecs
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


def local_folder(path: str) -> Path | None:
    """The folder a local data file's relative image paths mean (its own), or a local dataset
    folder; None for a hub id."""
    p = Path(path)
    return p.parent if p.is_file() else p if p.is_dir() else None


def image_path(value: str, folder: Path | None, where: str) -> Path:
    """A record's image path: absolute as given, relative to `folder` (the recipe's image folder,
    else the data file's own folder, never the working directory). A URL is refused by name:
    joined to a folder it would only be reported as a missing file."""
    if "://" in value:
        raise BadRecord(f"{where}: image {value!r} is a URL; expected a local file path (download the "
                        "images and point image_folder at them)")
    return Path(value) if folder is None else folder / value


def check_utf8(path: Path) -> None:
    """A JSON/JSONL/CSV file is UTF-8 text (pyarrow's own error names neither the file nor the byte);
    decoded incrementally, so a large file is never held whole."""
    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise BadRecord(f"{path}: not UTF-8 text ({e.reason} at byte {offset + e.start}); expected "
                                "a UTF-8 text file") from e
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise BadRecord(f"{path}: not UTF-8 text (truncated character at the end); expected a UTF-8 text file") from e


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
        if kind == "json":
            check_utf8(p)
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
