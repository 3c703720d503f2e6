"""Image archives (zip) unpacked where the recipes read them, atomically, once per archive hash."""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from lora_vl.artifacts import atomic_dir
from lora_vl.errors import InputError
from lora_vl.lock import folder_stats

MARKER = ".lora-vl-unpacked"  # holds the sha256 of the archive the folder was unpacked from


def unpacked_from(folder: Path) -> str | None:
    marker = folder / MARKER
    return marker.read_text().strip() if marker.is_file() else None


def unpack(archive: Path, folder: Path, sha256: str) -> tuple[int, int]:
    """Unpack `archive` into `folder` (a single top-level folder of the same name is not doubled);
    (files, bytes) unpacked. Nothing is left half-written: the folder appears complete or not at all."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise InputError(f"{archive}: not a readable zip archive ({e})") from e
    with zf, atomic_dir(folder, overwrite=True) as tmp:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        tops = {PurePosixPath(n).parts[0] for n in names}
        strip = len(tops) == 1 and tops == {folder.name} and all(len(PurePosixPath(n).parts) > 1 for n in names)
        for name in names:
            parts = PurePosixPath(name).parts[1 if strip else 0:]
            if PurePosixPath(name).is_absolute() or ".." in parts:
                raise InputError(f"{archive}: member {name!r} would unpack outside {folder}; refusing the archive")
            target = tmp.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        stats = folder_stats(tmp)
        (tmp / MARKER).write_text(sha256 + "\n")
    return stats
