"""`lora-vl.lock`: the commit hash of every hub model/dataset the recipes use, and the size and
sha256 of every data file fetched for them.

`lora-vl fetch` writes it (and `--update` moves it on purpose); every stage reads it: a recipe's
revision left unset is taken from the lock (`pin_recipe`), and a fetched data file is checked
against it before training (`verify_data_file`). The lock sits beside `recipes/` (the working
directory the commands run in); `LORA_VL_LOCK` names another file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from lora_vl.artifacts import atomic_write_text
from lora_vl.errors import InputError

LOCK_NAME = "lora-vl.lock"
HEADER = ("# lora-vl.lock: the hub commit of every model and dataset the recipes use, and the size and\n"
          "# sha256 of each data file fetched. Written by `lora-vl fetch`; `lora-vl fetch --update` moves it.\n"
          "# Recipes whose revision is null read it; keep it under version control.\n")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class LockError(InputError):
    """The lock file is unreadable, or what is on disk or in a recipe does not match it."""


@dataclass
class LockedRepo:
    repo_type: str                      # "model" | "dataset"
    repo_id: str
    revision: str                       # the commit hash it resolved to
    license: str | None = None
    gated: str | None = None            # the hub's gating ("auto" / "manual"), None when open
    local_dir: str | None = None        # where its files were put (None: the Hugging Face cache)
    files: dict[str, dict] = field(default_factory=dict)     # name -> {size, sha256}
    archives: dict[str, dict] = field(default_factory=dict)  # zip name -> {size, sha256, into, files, bytes}

    @property
    def key(self) -> str:
        return repo_key(self.repo_type, self.repo_id)


def repo_key(repo_type: str, repo_id: str) -> str:
    return f"{repo_type}:{repo_id}"


def lock_path() -> Path:
    return Path(os.environ.get("LORA_VL_LOCK") or LOCK_NAME)


@dataclass
class Lock:
    path: Path
    repos: dict[str, LockedRepo] = field(default_factory=dict)

    def get(self, repo_type: str, repo_id: str) -> LockedRepo | None:
        return self.repos.get(repo_key(repo_type, repo_id))

    def put(self, repo: LockedRepo) -> None:
        self.repos[repo.key] = repo

    def save(self) -> None:
        body = {key: {k: v for k, v in dataclasses.asdict(r).items() if v not in (None, {})}
                for key, r in sorted(self.repos.items())}
        atomic_write_text(self.path, HEADER + yaml.safe_dump({"version": 1, "repos": body}, sort_keys=False))

    def owner_of(self, path: str | Path) -> tuple[LockedRepo, str] | None:
        """The fetched repo whose local_dir holds `path`, and the path's name inside it."""
        path = os.path.abspath(path)  # local_dir is relative to where fetch ran: the project root
        for repo in self.repos.values():
            if repo.local_dir and (path + os.sep).startswith(os.path.abspath(repo.local_dir) + os.sep):
                return repo, os.path.relpath(path, os.path.abspath(repo.local_dir)).replace(os.sep, "/")
        return None


def read_lock(path: str | Path | None = None) -> Lock:
    """The lock at `path` (default: `lock_path()`); empty if there is none yet."""
    path = Path(path) if path is not None else lock_path()
    if not path.is_file():
        return Lock(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        repos = {}
        for key, entry in (data.get("repos") or {}).items():
            repo = LockedRepo(**entry)
            if repo.key != key:
                raise ValueError(f"entry {key!r} names {repo.key!r}")
            repos[key] = repo
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as e:
        raise LockError(f"{path}: not a readable lora-vl lock file ({e}); fix it or delete it and run "
                        "`lora-vl fetch` again") from e
    return Lock(path, repos)


# --- hub references in recipes ---------------------------------------------------------------

LOCAL_ROOTS = ("data", "outputs")  # the kit's own folders: `data/FigStep` is a path even before it exists


def is_hub_id(ref: str | None) -> bool:
    """`owner/name` that is not a local path (a hub id is pinned by the lock; a path is not)."""
    return (bool(ref) and REPO_ID.match(ref) is not None and ref.split("/")[0] not in LOCAL_ROOTS
            and not os.path.exists(ref))


@dataclass
class HubRef:
    where: str           # the recipe key of the revision field
    owner: object        # the dataclass holding it
    name: str            # the revision field's name
    repo_type: str
    repo_id: str

    @property
    def revision(self) -> str | None:
        return getattr(self.owner, self.name)


def hub_refs(obj, where: str = "recipe") -> Iterator[HubRef]:
    """Every hub model/dataset a recipe names: the fields declared with `pins=` (lora_vl.recipe)."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from hub_refs(item, f"{where}[{i}]")
        return
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        pins = f.metadata.get("pins")
        if pins:
            repo_type, key = pins
            if is_hub_id(getattr(obj, key)):
                yield HubRef(f"{where}.{f.name}", obj, f.name, repo_type, getattr(obj, key))
        else:
            yield from hub_refs(value, f"{where}.{f.name}")


def pin_recipe(recipe, lock: Lock | None = None, where: str = "recipe"):
    """Fill every unset hub revision of `recipe` from the lock (in place; returns it). A revision
    the recipe sets must be the locked one: a run must not train on another checkout silently."""
    lock = lock if lock is not None else read_lock()
    for ref in hub_refs(recipe, where):
        locked = lock.get(ref.repo_type, ref.repo_id)
        if locked is None:
            continue
        if ref.revision is None:
            setattr(ref.owner, ref.name, locked.revision)
        elif ref.revision != locked.revision:
            raise LockError(f"{ref.where}: {ref.repo_id} pinned to {ref.revision!r}, but {lock.path} locks "
                            f"{locked.revision}; drop the revision to use the lock, or move the lock with "
                            "`lora-vl fetch RECIPE --update`")
    return recipe


# --- files on disk against the lock ------------------------------------------------------------

def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: str | Path, expected: dict, source: str) -> str:
    """Size, then sha256, of `path` against `expected` ({size, sha256}); returns the sha256."""
    size = os.path.getsize(path)
    if size != expected["size"]:
        raise LockError(f"{path}: {size} bytes, but {source} says {expected['size']}; the file is truncated "
                        "or was changed: run `lora-vl fetch` again to restore it")
    sha = file_sha256(path)
    if sha != expected["sha256"]:
        raise LockError(f"{path}: sha256 {sha[:12]}…, but {source} says {expected['sha256'][:12]}…; the "
                        "file is corrupt or was changed: delete it and run `lora-vl fetch` again")
    return sha


def verify_data_file(path: str | Path, lock: Lock | None = None) -> str | None:
    """sha256 of a fetched data file, checked against the lock; None when the lock does not know
    it (a file of your own). The one hash a stage computes of such a file."""
    lock = lock if lock is not None else read_lock()
    found = lock.owner_of(path)
    if found is None or found[1] not in found[0].files:
        return None
    repo, name = found
    return check_file(path, repo.files[name], f"{lock.path} ({repo.repo_id}@{repo.revision[:12]})")


def folder_stats(folder: str | Path) -> tuple[int, int]:
    """(files, bytes) under `folder`: a cheap identity of an unpacked image archive."""
    files = [p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")]
    return len(files), sum(p.stat().st_size for p in files)


def verify_data_folder(folder: str | Path, lock: Lock | None = None) -> None:
    """An unpacked archive still holds what was unpacked (file count and bytes; hashing hundreds
    of thousands of images before every stage would cost more than the check is worth)."""
    lock = lock if lock is not None else read_lock()
    found = lock.owner_of(folder)
    if found is None:
        return
    repo, name = found
    for archive, entry in repo.archives.items():
        if os.path.normpath(entry["into"]) == os.path.normpath(name):
            have = folder_stats(folder)
            if have != (entry["files"], entry["bytes"]):
                raise LockError(f"{folder}: {have[0]} files / {have[1]} bytes, but {lock.path} unpacked "
                                f"{entry['files']} files / {entry['bytes']} bytes from {repo.repo_id}:{archive}; "
                                "files are missing or changed: run `lora-vl fetch` again")
