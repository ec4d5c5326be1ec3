"""A small read-only Hub-compatible server on 127.0.0.1 for the source tests.

It serves the routes ``huggingface_hub`` uses to download (``/api/models/{id}/revision/{rev}``,
``/api/models/{id}/tree/{rev}``, ``HEAD``/``GET /{id}/resolve/{rev}/{path}`` with ranges) and
answers errors the way the Hub does (``X-Error-Code``: RepoNotFound, GatedRepo, RevisionNotFound,
EntryNotFound), so the real client raises its real exceptions. Repos are added in memory as
commits; it counts file downloads so tests can prove that nothing was fetched twice.

The shared local Hub (``hubbot/localhub.py``, with uploads) supersedes it for tests that can
publish through the real client; this one needs no write routes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Repo:
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    gated: bool = False
    private: bool = False
    tokens: set[str] = field(default_factory=set)  # tokens of accounts with access


class ReadHub:
    """The server: ``endpoint``, ``add_commit(...)``, ``downloads`` (Counter of (repo, path))."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.downloads: Counter = Counter()
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._srv.server_address[1]}"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def add_commit(self, repo: str, files: dict[str, bytes], *, branch: str = "main", gated: bool = False,
                   private: bool = False, tokens: set[str] | None = None) -> str:
        """Add a commit holding ``files`` (a full tree) on ``branch``; returns its sha."""
        r = self.repos.setdefault(repo, Repo())
        r.gated, r.private = gated, private
        r.tokens |= tokens or set()
        sha = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items()))
                           .encode() + str(len(r.commits)).encode()).hexdigest()
        r.commits[sha] = dict(files)
        r.refs[branch] = sha
        return sha

    def add_folder(self, repo: str, folder: Path, **kw) -> str:
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_commit(repo, files, **kw)

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: ReadHub

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(),
                   {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"})

    def _json(self, data) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _commit(self, repo_id: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
        """The commit for ``rev`` after the access checks, or None when an error was sent."""
        repo = self.server_hub.repos.get(repo_id)
        auth = self.headers.get("Authorization") or ""
        token = auth.removeprefix("Bearer ").strip() or None
        if repo is None or (repo.private and token not in repo.tokens):
            # Like the Hub: a private repo looks missing; 401 when no token was sent.
            self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated and token not in repo.tokens:
            self._error(401 if token is None else 403, "GatedRepo", "Access to this model is restricted")
            return None
        sha = repo.refs.get(rev, rev)
        if sha not in repo.commits:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return sha, repo.commits[sha]

    def _handle(self) -> None:
        path = self.path.split("?")[0]
        if m := re.match(r"^/api/models/([^/]+/[^/]+)/revision/([^/]+)$", path):
            if found := self._commit(m.group(1), m.group(2)):
                sha, files = found
                self._json({"id": m.group(1), "sha": sha, "private": False,
                            "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(files.items())]})
            return
        if m := re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)$", path):
            if found := self._commit(m.group(1), m.group(2)):
                self._json([{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                            for p, b in sorted(found[1].items())])
            return
        if m := re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path):
            found = self._commit(m.group(1), m.group(2))
            if not found:
                return
            sha, files = found
            data = files.get(m.group(3))
            if data is None:
                self._error(404, "EntryNotFound", f"{m.group(3)} does not exist")
                return
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            start = 0
            if self.command == "GET" and (rng := re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")):
                start = int(rng.group(1))
            headers = {"X-Repo-Commit": sha, "ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(len(data))}
            if self.command == "GET":
                self.server_hub.downloads[(m.group(1), m.group(3))] += 1
            self._send(206 if start else 200, data[start:], headers)
            return
        self._error(404, "NotFound", f"no route {path}")
