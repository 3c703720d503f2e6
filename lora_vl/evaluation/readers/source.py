"""Rows of a benchmark from a hub id (`datasets.load_dataset`, pinned revision) or a local path.

One loader for every reader, so gated/missing datasets fail the same clear way everywhere.
"""
from __future__ import annotations

import json
from pathlib import Path

from lora_vl.data.sources import check_utf8
from lora_vl.evaluation.items import BenchmarkError, is_base64_image

# Gated hub datasets: where to ask for access (their dataset cards).
GATED = {
    "sorry-bench/sorry-bench-202406": "https://huggingface.co/datasets/sorry-bench/sorry-bench-202406",
    "allenai/wildjailbreak": "https://huggingface.co/datasets/allenai/wildjailbreak",
    "ys-zong/VLGuard": "https://huggingface.co/datasets/ys-zong/VLGuard",
}
BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
MAX_REFERENCE_CHARS = 64  # VLMEvalKit: an `image` of at most 64 characters is another row's `index`


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
    rows = list(ds)
    return resolve_index_references(rows, path, benchmark) if path.suffix.lower() == ".tsv" else rows


def resolve_index_references(rows: list[dict], path: Path, benchmark: str) -> list[dict]:
    """VLMEvalKit's TSVs store a repeated image once: the other rows carry that row's `index` in
    `image` (any value of at most 64 characters is such a reference). Each is replaced by the
    referenced row's image; a reference to a missing row, or to a row without image data of its
    own, names the row (line numbers count the header as line 1)."""
    if not rows or "index" not in rows[0] or "image" not in rows[0]:
        return rows
    by_index = {str(r["index"]).strip(): r["image"] for r in rows}
    for line, r in enumerate(rows, 2):
        ref = r["image"]
        if not isinstance(ref, str) or len(ref) > MAX_REFERENCE_CHARS or ref.lower().endswith(IMAGE_SUFFIXES):
            continue
        target = by_index.get(ref.strip())
        if not isinstance(target, str) or len(target) <= MAX_REFERENCE_CHARS:
            why = "no row has that index" if ref.strip() not in by_index else "that row has no image data of its own"
            raise BenchmarkError(f"{benchmark}: {path} line {line} (index {r['index']}): image {ref!r} "
                                 f"is a reference to another row's index, but {why}")
        r["image"] = target
    return rows


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
    """A relative image path resolved against the data folder (first subdir where it exists). A URL
    is kept as it is, so that `load_image` names it as a URL rather than a missing file."""
    if folder is None or not rel or is_base64_image(rel) or "://" in rel:
        return rel
    for sub in subdirs:
        cand = folder / sub / rel
        try:
            if cand.is_file():
                return str(cand)
        except OSError:  # not a usable path (e.g. a name over 255 characters): load_image says why
            return rel
    return str(folder / subdirs[0] / rel)  # load_image names it if it is really missing


def row_image(row: dict, folder: Path | None, key: str = "image", subdirs: tuple[str, ...] = ("", "images")):
    """A row's image value, undecoded: the first of a list (SEED-Bench rows hold a list), a PIL
    image / bytes / {bytes, path} dict / base64 text as it is, a relative path resolved against
    the data folder."""
    img = row.get(key)
    if isinstance(img, list):
        img = img[0] if img else None
    if isinstance(img, str):
        img = resolve_image(folder, img, subdirs)
    return img
