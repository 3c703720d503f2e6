"""The Hub side of a fetch, all through huggingface_hub: resolve a revision to its commit and list
its files (`HfApi.repo_info`), see what is already on disk (`snapshot_download(dry_run=True)`),
download resumably (`snapshot_download`), and turn the Hub's errors into one line each."""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import httpx2  # huggingface_hub 2.x transport: its connection errors reach us unwrapped
from huggingface_hub import HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RepositoryNotFoundError, RevisionNotFoundError)
from huggingface_hub.utils import filter_repo_objects

from lora_vl.errors import InputError
from lora_vl.fetch.plan import Item


class HubError(InputError):
    """The Hub refused or could not be reached; the message names the repo and what to do."""


def page(repo_type: str, repo_id: str) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{constants.ENDPOINT}/{prefix}{repo_id}"


def _token_state() -> str:
    return "HF_TOKEN is not set and no `hf auth login` token was found" if get_token() is None \
        else "the token in use has no access to it"


@contextlib.contextmanager
def hub_errors(repo_type: str, repo_id: str, revision: str | None = None):
    """One line per Hub failure, naming the repo, the page and the variable to set."""
    try:
        yield
    except GatedRepoError as e:
        raise HubError(f"{repo_id} is gated: accept its licence at {page(repo_type, repo_id)} (logged in), then "
                       f"set HF_TOKEN to a token of that account ({_token_state()})") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{repo_id}: revision {revision!r} does not exist on {constants.ENDPOINT}; fix the "
                       "recipe's revision or move the lock with --update") from e
    except RepositoryNotFoundError as e:
        raise HubError(f"{repo_id}: no such {repo_type} on {constants.ENDPOINT}, or a private one "
                       f"({_token_state()}); check the id at {page(repo_type, repo_id)}") from e
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, httpx2.TransportError) as e:
        raise HubError(f"{repo_id}: cannot reach {constants.ENDPOINT} ({type(e).__name__}); check the network, "
                       "HF_ENDPOINT, or unset HF_HUB_OFFLINE") from e
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise HubError(f"{repo_id}: {constants.ENDPOINT} answered HTTP {status}: {str(e).splitlines()[0]}") from e


@dataclass
class RemoteFile:
    size: int
    sha256: str | None       # LFS files: the Hub's sha256 of the content
    git_sha1: str | None     # other files: the git blob id


@dataclass
class Remote:
    commit: str
    files: dict[str, RemoteFile]
    license: str | None
    gated: str | None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())


def resolve(item: Item, revision: str | None) -> Remote:
    """The commit `revision` (default branch if None) stands for, and the item's files in it."""
    with hub_errors(item.repo_type, item.repo_id, revision):
        info = HfApi().repo_info(item.repo_id, repo_type=item.repo_type, revision=revision, files_metadata=True)
    names = set(filter_repo_objects([s.rfilename for s in info.siblings or []], allow_patterns=list(item.files),
                                    ignore_patterns=list(item.skip) or None))
    files = {s.rfilename: RemoteFile(s.size or 0, s.lfs.sha256 if s.lfs else None, None if s.lfs else s.blob_id)
             for s in info.siblings or [] if s.rfilename in names}
    card = info.card_data.to_dict() if info.card_data is not None else {}
    return Remote(info.sha, files, card.get("license"), info.gated or None)


def to_download(item: Item, commit: str, names: list[str]) -> dict[str, int]:
    """{file: size} of the files not yet on disk at `commit` (huggingface_hub's own check)."""
    if not names:
        return {}
    with hub_errors(item.repo_type, item.repo_id, commit):
        infos = snapshot_download(item.repo_id, repo_type=item.repo_type, revision=commit, local_dir=item.local_dir,
                                  allow_patterns=names, dry_run=True)
    return {i.filename: i.file_size for i in infos if i.will_download}


def download(item: Item, commit: str, names: list[str]) -> Path:
    """Download `names` at `commit` (resuming partial files); the folder they are in."""
    with hub_errors(item.repo_type, item.repo_id, commit):
        return Path(snapshot_download(item.repo_id, repo_type=item.repo_type, revision=commit,
                                      local_dir=item.local_dir, allow_patterns=names))


def hashes(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file in one read: the Hub gives one or the other."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    sha1.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def check_download(path: Path, name: str, remote: RemoteFile, repo_id: str) -> str:
    """A downloaded file against what the Hub says it is; a bad one is removed (so the next fetch
    downloads it again) and named. Returns its sha256."""
    size = path.stat().st_size
    sha256, sha1 = hashes(path)
    expected = remote.sha256 or remote.git_sha1
    if size != remote.size or expected not in (sha256, sha1):
        blob = path.resolve()  # in the HF cache the file is a link to its blob: remove both
        path.unlink()
        blob.unlink(missing_ok=True)
        raise HubError(f"{path}: downloaded from {repo_id}:{name} but its {size} bytes / hash {sha256[:12]}… do not "
                       f"match the Hub's {remote.size} bytes / {expected[:12]}… (removed; run the fetch again)")
    return sha256
