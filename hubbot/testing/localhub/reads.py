"""Read routes of the local Hub: repo info, tree and paths-info listings, refs, commits and file downloads.

Downloads (``HEAD``/``GET /{repo}/resolve/{rev}/{path}``) answer with the headers
``huggingface_hub`` reads (``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``/``X-Linked-Size`` for
LFS files) and honour ``Range``, so an interrupted download resumes as it would from the Hub.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from hubbot.testing.localhub.access import Fault
from hubbot.testing.localhub.store import git_blob_sha1, lfs_pointer


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a ``Range: bytes=a-b`` / ``a-`` / ``-n`` header; None for none or one we ignore."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if not m or m.groups() == ("", ""):
        return None
    first, last = m.groups()
    if not first:
        return max(0, size - int(last)), size - 1
    return int(first), min(int(last), size - 1) if last else size - 1


def _directory(path: str) -> dict:
    return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0}


class ReadRoutes:
    """Request-handler mixin: the routes that read a repo (see ``handler.ROUTES``)."""

    def _entry(self, path: str, e: dict) -> dict:
        if "lfs" in e:
            pointer = lfs_pointer(e["lfs"], e["size"])
            return {"type": "file", "path": path, "size": e["size"], "oid": git_blob_sha1(pointer),
                    "lfs": {"oid": e["lfs"], "size": e["size"], "pointerSize": len(pointer)}}
        return {"type": "file", "path": path, "size": e["size"], "oid": e["blob"]}

    def _commit_at(self, repo: str, rev: str) -> tuple[dict, str] | None:
        """(repo metadata, commit sha) of ``rev`` when readable; otherwise the error was sent and None returned."""
        meta = self._readable(repo)
        if meta is None:
            return None
        sha = self.server_hub.resolve(meta, rev)
        if sha is None:
            self._error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
            return None
        return meta, sha

    def _tree_at(self, repo: str, rev: str) -> dict | None:
        found = self._commit_at(repo, rev)
        return None if found is None else self.server_hub.load_commit(repo, found[1])["files"]

    def h_info(self, fault: Fault | None, repo: str, rev: str = "main") -> None:
        found = self._commit_at(repo, rev)
        if found is None:
            return
        meta, sha = found
        files = self.server_hub.load_commit(repo, sha)["files"]
        self._json({"id": repo, "modelId": repo, "sha": sha, "private": meta["private"], "gated": meta.get("gated", False),
                    "disabled": False, "tags": [], "downloads": 0, "likes": 0, "author": repo.split("/")[0],
                    "siblings": [{"rfilename": p, "size": e["size"]} for p, e in sorted(files.items())]})

    def h_paths_info(self, fault: Fault | None, repo: str, rev: str) -> None:
        form = parse_qs(self._body().decode())
        files = self._tree_at(repo, rev)
        if files is None:
            return
        folders = {str(Path(p).parent) for p in files}
        out = []
        for p in form.get("paths", []):
            if p in files:
                out.append(self._entry(p, files[p]))
            elif p in folders:
                out.append(_directory(p))
        self._json(out)

    def h_tree(self, fault: Fault | None, repo: str, rev: str, sub: str | None = None) -> None:
        files = self._tree_at(repo, rev)
        if files is None:
            return
        prefix = (unquote(sub).strip("/") + "/") if sub else ""
        recursive = (self.query.get("recursive") or ["False"])[0].lower() in ("1", "true")
        out: list[dict] = []
        dirs: set[str] = set()
        for p, e in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append(_directory(d))
            if recursive or len(parts) == 1:
                out.append(self._entry(p, e))
        if sub and not out:
            self._error(404, f"{sub} does not exist", "EntryNotFound")
            return
        self._json(out)

    def h_refs(self, fault: Fault | None, repo: str) -> None:
        meta = self._readable(repo)
        if meta is None:
            return
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in meta["refs"].items()
                    if not n.startswith("refs/")]
        tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in meta["tags"].items()]
        data: dict[str, Any] = {"branches": branches, "tags": tags, "converts": []}
        if "include_prs" in self.query:
            data["pullRequests"] = [{"name": n, "ref": n, "targetCommit": s} for n, s in meta["refs"].items()
                                    if n.startswith("refs/pr/")]
        self._json(data)

    def h_commits(self, fault: Fault | None, repo: str, rev: str) -> None:
        if self._commit_at(repo, rev) is None:
            return
        out = [{"id": c["id"], "title": c["title"], "message": c["description"], "authors": [],
                "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(c["time"]))}
               for c in self.server_hub.commits(repo, unquote(rev))]
        self._json(out)

    def h_resolve(self, fault: Fault | None, repo: str, rev: str, file: str) -> None:
        hub = self.server_hub
        found = self._commit_at(repo, rev)
        if found is None:
            return
        sha = found[1]
        file = unquote(file)
        entry = hub.load_commit(repo, sha)["files"].get(file)
        if entry is None:
            self._error(404, f"{file} does not exist", "EntryNotFound")
            return
        etag = f'"{entry.get("lfs") or entry["blob"]}"'
        size = entry["size"]
        headers = {"X-Repo-Commit": sha, "ETag": etag, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if "lfs" in entry:
            headers |= {"X-Linked-Etag": etag, "X-Linked-Size": str(size)}
        span = byte_range(self.headers.get("Range"), size) if self.command == "GET" else None
        if span is not None and span[0] >= size:
            self._send(416, b"", headers | {"Content-Range": f"bytes */{size}"})
            return
        first, last = span or (0, size - 1)
        if span is not None:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(last + 1 - first)
        if self.command == "GET":
            with hub.lock:
                hub.downloads[(repo, file)] += 1
                hub.served_by_file[(repo, file)] += last + 1 - first
        self.send_response(206 if span is not None else 200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        left = last + 1 - first
        with open(hub.object_path(entry), "rb") as fh:
            fh.seek(first)
            while left > 0 and (block := fh.read(min(1 << 20, left))):
                self.wfile.write(block)
                left -= len(block)
                with hub.lock:
                    hub.bytes_served += len(block)
