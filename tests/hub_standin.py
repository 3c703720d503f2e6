"""A local stand-in for the Hub's HTTP API (127.0.0.1, reached through HF_ENDPOINT), serving the
endpoints huggingface_hub 2.x calls to resolve and download a repo:

- GET  /api/{models,datasets}/{repo}[/revision/{rev}]     repo info: sha, siblings (size, blobId, lfs), gated, cardData
- GET  /api/{models,datasets}/{repo}/tree/{rev}[/{path}]  the file listing (recursive)
- HEAD/GET /[datasets/]{repo}/resolve/{rev}/{file}         X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size,
                                                           Content-Length; Range requests answered 206
Gated repos answer resolve with 401 (no token) or 403 (a token without access) and X-Error-Code
GatedRepo, as the Hub does; unknown repos/revisions 404 with RepoNotFound / RevisionNotFound.
Test knobs: `cut_once[file] = n` ends the first GET of a file after n bytes (an interrupted
download); `corrupt[file] = bytes` serves other bytes of the same size than the listing says.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".zip", ".parquet", ".bin")
ACCESS_TOKEN = "hf_standin_granted"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # oldest first
    gated: str | None = None
    license: str | None = None

    def commit(self, files: dict[str, bytes]) -> str:
        sha = hashlib.sha1(json.dumps({k: git_sha1(v) for k, v in sorted(files.items())}).encode()
                           + str(len(self.commits)).encode()).hexdigest()
        self.commits.append((sha, dict(files)))
        return sha

    def at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision == "main":
            return self.commits[-1]
        return next((c for c in self.commits if c[0] == revision), None)


def file_entry(name: str, data: bytes) -> dict:
    entry = {"size": len(data), "oid": git_sha1(data)}
    if name.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


class StandInHub:
    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.cut_once: dict[str, int] = {}
        self.corrupt: dict[str, bytes] = {}
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.sent: dict[str, int] = {}  # file path -> body bytes sent, all GETs together
        self.make_missing = None  # callable(repo_type, repo_id) -> Repo | None: serve any id on demand
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo_type: str, repo_id: str, files: dict[str, bytes], **kw) -> Repo:
        repo = self.repos.get((repo_type, repo_id)) or Repo(repo_type, repo_id, **kw)
        repo.commit(files)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def downloads(self) -> list[str]:
        return [p for m, p, _ in self.log if m == "GET" and "/resolve/" in p]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def find(self, repo_type: str, repo_id: str) -> Repo | None:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None and self.make_missing is not None:
            repo = self.make_missing(repo_type, repo_id)
            if repo is not None:
                self.repos[(repo_type, repo_id)] = repo
        return repo

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.route(head=True)

            def do_GET(self):
                self.route(head=False)

            def reply(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def error(self, status: int, code: str, head: bool, commit: str | None = None):
                headers = {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"}
                if commit:
                    headers["X-Repo-Commit"] = commit
                self.reply(status, json.dumps({"error": code}).encode(), headers, head)

            def route(self, head: bool):
                path = unquote(urlparse(self.path).path)
                hub.log.append(("HEAD" if head else "GET", path, self.headers.get("Range")))
                m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(/.*)?)?", path)
                if m:
                    return self.api(m.group(1)[:-1], m.group(2), m.group(3), m.group(4) or "main", head)
                m = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m:
                    return self.resolve("dataset" if m.group(1) else "model", m.group(2), m.group(3), m.group(4), head)
                self.error(404, "EntryNotFound", head)

            def lookup(self, repo_type, repo_id, revision, head):
                repo = hub.find(repo_type, repo_id)
                if repo is None:
                    self.error(401 if not self.headers.get("Authorization") else 404, "RepoNotFound", head)
                    return None, None
                found = repo.at(revision)
                if found is None:
                    self.error(404, "RevisionNotFound", head)
                    return repo, None
                return repo, found

            def api(self, repo_type, repo_id, what, revision, head):
                repo, found = self.lookup(repo_type, repo_id, revision, head)
                if found is None:
                    return
                sha, files = found
                if what == "tree":
                    body = [{"type": "file", "path": name, **file_entry(name, data)}
                            for name, data in sorted(files.items())]
                else:
                    siblings = []
                    for name, data in sorted(files.items()):
                        e = file_entry(name, data)
                        s = {"rfilename": name, "size": e["size"], "blobId": e["oid"]}
                        if "lfs" in e:
                            s["lfs"] = {"sha256": e["lfs"]["oid"], "size": e["size"], "pointerSize": 134}
                        siblings.append(s)
                    body = {"id": repo_id, "_id": repo_id, "sha": sha, "private": False, "gated": repo.gated or False,
                            "disabled": False, "siblings": siblings, "tags": [],
                            "cardData": {"license": repo.license} if repo.license else None}
                self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)

            def resolve(self, repo_type, repo_id, revision, name, head):
                repo, found = self.lookup(repo_type, repo_id, revision, head)
                if found is None:
                    return
                sha, files = found
                if repo.gated:
                    auth = self.headers.get("Authorization")
                    if auth != f"Bearer {ACCESS_TOKEN}":
                        return self.error(403 if auth else 401, "GatedRepo", head, sha)
                if name not in files:
                    return self.error(404, "EntryNotFound", head, sha)
                data = files[name]
                entry = file_entry(name, data)
                etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
                data = hub.corrupt.get(name, data)
                headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                           "Content-Type": "application/octet-stream"}
                if "lfs" in entry:
                    headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
                start = 0
                rng = self.headers.get("Range")
                if rng and not head:
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                cut = None if head else hub.cut_once.pop(name, None)
                if cut is not None:  # promise everything, send part, drop the connection
                    self.send_response(206 if start else 200)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:cut])
                    hub.sent[self.path] = hub.sent.get(self.path, 0) + cut
                    self.wfile.flush()
                    self.close_connection = True
                    return
                headers["Content-Length"] = str(len(body))
                self.send_response(206 if start else 200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                    hub.sent[self.path] = hub.sent.get(self.path, 0) + len(body)

        return Handler
