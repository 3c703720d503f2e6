"""`lora-vl fetch RECIPE|SUITE ... [--dry-run] [--update]`: download what the recipes need into the
paths they read, pin every hub revision in lora-vl.lock, and check every file fetched.

First the plan (what, where, how big, which licence or gated access), then one item at a time with
huggingface_hub's progress bars; partial downloads resume; what is already there is not fetched
again. The lock is written after each item, so an interrupted fetch keeps what it finished.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from lora_vl.fetch.hub import HubError, Remote, check_download, download, page, resolve, to_download
from lora_vl.fetch.plan import Item, plan_items
from lora_vl.fetch.unpack import unpack, unpacked_from
from lora_vl.lock import LockedRepo, LockError, read_lock


@dataclass
class Step:
    item: Item
    remote: Remote | None = None
    names: list[str] | None = None        # files to have on disk (archives already unpacked left out)
    missing: dict[str, int] | None = None  # files to download: {name: size}
    note: str = ""


def human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def archive_sha(name: str, remote: Remote, locked: LockedRepo | None) -> str | None:
    """The sha256 an archive at this commit has: the Hub's (LFS), else the one recorded on unpacking."""
    if remote.files[name].sha256:
        return remote.files[name].sha256
    if locked and locked.revision == remote.commit:
        return (locked.archives.get(name) or {}).get("sha256")
    return None


def plan_step(item: Item, lock, update: bool) -> Step:
    if item.repo_id is None:
        return Step(item, note=f"not on the Hub: {item.manual}")
    locked = lock.get(item.repo_type, item.repo_id)
    if locked and item.revision and item.revision != locked.revision and not update:
        raise LockError(f"{item.needed_by[0]}: pins {item.repo_id} to {item.revision}, but {lock.path} locks "
                        f"{locked.revision}; drop the revision, or move the lock with --update")
    remote = resolve(item, item.revision or (locked.revision if locked and not update else None))
    unpacked = {a: unpacked_from(Path(item.local_dir, into)) for a, into in item.unpack.items() if a in remote.files}
    done = {a for a, sha in unpacked.items() if sha is not None and sha == archive_sha(a, remote, locked)}
    names = sorted(n for n in remote.files if n not in done)
    notes = [f"licence {remote.license}"] if remote.license else []
    try:
        missing = to_download(item, remote.commit, names)
    except HubError as e:
        missing = {n: remote.files[n].size for n in names}
        notes.append(str(e))
    if remote.gated:
        notes.append(f"gated: accept the licence at {page(item.repo_type, item.repo_id)}, set HF_TOKEN")
    return Step(item, remote, names, missing, "; ".join(notes))


def print_plan(steps: list[Step]) -> None:
    print(f"{'item':<58} {'revision':<12} {'size':>9} {'to fetch':>9}  where / notes")
    for s in steps:
        where = s.item.local_dir or "HF cache"
        if s.remote is None:
            print(f"{s.item.name:<58} {'-':<12} {'?':>9} {'?':>9}  {where}; {s.note}")
            continue
        print(f"{s.item.repo_type + ' ' + s.item.repo_id:<58} {s.remote.commit[:12]:<12} "
              f"{human(s.remote.size):>9} {human(sum(s.missing.values())):>9}  "
              f"{where}{'; ' + s.note if s.note else ''}")
    total = sum(sum(s.missing.values()) for s in steps if s.missing is not None)
    print(f"to download: {human(total)} in {sum(len(s.missing or {}) for s in steps)} files")


def fetch_step(s: Step, lock) -> int:
    """Download, check and record one item; the number of files downloaded."""
    item, remote = s.item, s.remote
    old = lock.get(item.repo_type, item.repo_id)
    folder = download(item, remote.commit, s.names)
    entry = LockedRepo(item.repo_type, item.repo_id, remote.commit, remote.license, remote.gated, item.local_dir)
    if old and old.revision == remote.commit:
        entry.archives = dict(old.archives)
    for name in s.names:
        path = folder / name
        known = old.files.get(name) if old and old.revision == remote.commit else None
        unchecked = item.local_dir is not None and (known is None or known["size"] != path.stat().st_size)
        if name in s.missing or unchecked:
            sha = check_download(path, name, remote.files[name], item.repo_id)
        else:  # checked when it came: the HF cache is content-addressed, a local file kept its size
            sha = known["sha256"] if known else remote.files[name].sha256
        if name in item.unpack:
            files, size = unpack(path, folder / item.unpack[name], sha)
            entry.archives[name] = {"size": remote.files[name].size, "sha256": sha, "into": item.unpack[name],
                                    "files": files, "bytes": size}
            path.unlink()  # the unpacked folder is what the recipes read; its marker names the archive
        elif item.local_dir is not None:
            entry.files[name] = {"size": path.stat().st_size, "sha256": sha}
    lock.put(entry)
    lock.save()
    return len(s.missing)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-vl fetch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="+", help="training recipes and evaluation suites, e.g. recipes/paper/*.yaml "
                   "eval/paper.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the plan (what, where, how big, licence) only")
    p.add_argument("--update", action="store_true", help="resolve revisions again and move the lock on purpose")
    p.add_argument("--lock", help="lock file (default: $LORA_VL_LOCK or ./lora-vl.lock)")
    return p


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    lock = read_lock(a.lock)
    steps = [plan_step(item, lock, a.update) for item in plan_items(a.recipes)]
    print_plan(steps)
    if a.dry_run:
        return 0
    downloaded = sum(fetch_step(s, lock) for s in steps if s.remote is not None)
    manual = [s for s in steps if s.remote is None and not Path(s.item.local_dir).exists()]
    print(f"{downloaded} files downloaded; lock: {lock.path}")
    for s in manual:
        print(f"still needed by hand: {s.item.local_dir}: {s.item.manual}")
    return 0
