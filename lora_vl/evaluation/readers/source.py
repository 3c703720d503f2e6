"""Rows of a benchmark from a hub id (`datasets.load_dataset`, pinned revision) or a local path.

One loader for every reader, so gated/missing datasets fail the same clear way everywhere.
"""
from __future__ import annotations

import json
from pathlib import Path

from lora_vl.data.sources import check_utf8
from lora_vl.evaluation.items import BenchmarkError

# Gated hub datasets: where to ask for access (their dataset cards).
GATED = {
    "sorry-bench/sorry-bench-202406": "https://huggingface.co/datasets/sorry-bench/sorry-bench-202406",
    "allenai/wildjailbreak": "https://huggingface.co/datasets/allenai/wildjailbreak",
    "ys-zong/VLGuard": "https://huggingface.co/datasets/ys-zong/VLGuard",
}
BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def is_local(source: str) -> bool:
    """A path (existing or not) rather than a hub id: hub ids are exactly 'owner/name'."""
    return (Path(source).expanduser().exists() or source.startswith((".", "/", "~"))
            or source.count("/") != 1 or Path(source).suffix.lower() in BUILDERS)


def find_file(root: str | Path, names: list[str], benchmark: str) -> Path:
    """`root` itself if it is a file, else the first of `names` found under it (any depth)."""
    root = Path(root).expanduser()
    if root.is_file():
        return root
    if not root.is_dir():
        raise BenchmarkError(f"{benchmark}: local path {root} does not exist")
    for name in names:
        hits = sorted(root.rglob(name))
        if hits:
            return hits[0]
    raise BenchmarkError(f"{benchmark}: none of {names} found under {root}")


def read_json(path: Path, benchmark: str):
    """Raw JSON for files whose top level is not a table (keyed objects, nested lists)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BenchmarkError(f"{benchmark}: cannot read JSON {path}: {e}") from e


def load_local(path: Path, benchmark: str) -> list[dict]:
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise BenchmarkError(f"{benchmark}: {path}: unsupported file type; expected one of {sorted(BUILDERS)}")
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    if builder == "csv":
        kwargs["keep_default_na"] = False  # empty cells stay '' instead of NaN (MMBench options)
    if builder in ("json", "csv"):
        check_utf8(path)
    import datasets

    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as e:
        raise BenchmarkError(f"{benchmark}: cannot parse {path}: {e}") from e
    return list(ds)


def access_hint(source: str) -> str:
    if source in GATED:
        return (f" {source} is gated: accept its terms at {GATED[source]}, then `huggingface-cli login` "
                f"(or set HF_TOKEN); or download it and point `source:` at the local copy.")
    return " Check the id and revision, your network/HF_HUB_OFFLINE setting, or use a local path."


def load_hub(source: str, benchmark: str, *, config=None, split="test", revision=None,
             data_files=None, **kwargs) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(source, config, split=split, revision=revision,
                                   data_files=data_files, **kwargs)
    except Exception as e:  # gated, missing, offline: datasets/hub raise many types
        raise BenchmarkError(f"{benchmark}: cannot load dataset {source!r} (config={config}, "
                             f"split={split}, revision={revision}): {type(e).__name__}: {e}."
                             f"{access_hint(source)}") from e
    return list(ds)


def load_rows(spec, benchmark: str, local_names: list[str], **hub_kwargs) -> tuple[list[dict], Path | None]:
    """(rows, folder of the local file or None). Local: the file, or one of `local_names` under the folder."""
    if is_local(spec.source):
        path = find_file(spec.source, local_names, benchmark)
        return load_local(path, benchmark), path.parent
    kwargs = dict(config=spec.config, split=spec.split or "test", revision=spec.revision,
                  data_files=spec.data_files)
    kwargs.update(hub_kwargs)
    return load_hub(spec.source, benchmark, **kwargs), None


def resolve_image(folder: Path | None, rel: str, subdirs: tuple[str, ...] = ("",)) -> str:
    """A relative image path resolved against the data folder (first subdir where it exists)."""
    if folder is None:
        return rel
    for sub in subdirs:
        cand = folder / sub / rel
        if cand.is_file():
            return str(cand)
    return str(folder / subdirs[0] / rel)  # load_image names it if it is really missing
