"""The local Hub's repos on disk: objects, commits, branches, tags, and seeding without HTTP.

Layout under ``storage`` (kept stable, so a restarted server keeps its repos):
``lfs/<oid[:2]>/<oid>`` LFS objects by sha256, ``blobs/<sha1[:2]>/<sha1>`` small files by git
blob sha1, ``repos/<owner>/<name>/repo.json`` refs, tags, settings and access, and
``repos/<owner>/<name>/commits/<sha>.json`` the full tree of each commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from huggingface_hub.utils.sha import git_hash

LFS_THRESHOLD = 10 * 1024 * 1024
_BINARY_SUFFIXES = (".gguf", ".bin", ".safetensors", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".pt", ".npy")


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a regular file's oid)."""
    return git_hash(data)


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def upload_mode(path: str, size: int, sample: bytes) -> str:
    """"lfs" or "regular", decided as the Hub does: by size, binary suffix or a NUL in the first bytes."""
    if size >= LFS_THRESHOLD or path.lower().endswith(_BINARY_SUFFIXES) or b"\0" in sample:
        return "lfs"
    return "regular"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically, so a crash never leaves half a repo.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


class RepoStore:
    """Repos, commits, refs and objects under ``storage``; every change holds ``lock``."""

    def __init__(self, storage: str | Path) -> None:
        self.storage = Path(storage).resolve()
        for sub in ("lfs", "blobs", "repos", "tmp"):
            (self.storage / sub).mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # --- paths and records -----------------------------------------------------------------
    def repo_dir(self, repo: str) -> Path:
        owner, name = repo.split("/", 1)
        return self.storage / "repos" / owner / name

    def load_repo(self, repo: str) -> dict | None:
        path = self.repo_dir(repo) / "repo.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def save_repo(self, repo: str, meta: dict) -> None:
        write_json(self.repo_dir(repo) / "repo.json", meta)

    def load_commit(self, repo: str, sha: str) -> dict | None:
        path = self.repo_dir(repo) / "commits" / f"{sha}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def lfs_path(self, oid: str) -> Path:
        return self.storage / "lfs" / oid[:2] / oid

    def blob_path(self, sha1: str) -> Path:
        return self.storage / "blobs" / sha1[:2] / sha1

    def object_path(self, entry: dict) -> Path:
        """Where the bytes of a tree entry ({"lfs": oid} or {"blob": sha1}) are stored."""
        return self.lfs_path(entry["lfs"]) if "lfs" in entry else self.blob_path(entry["blob"])

    def store_blob(self, data: bytes) -> dict:
        """Keep ``data`` as a regular (git blob) file; returns its tree entry."""
        sha1 = git_blob_sha1(data)
        blob = self.blob_path(sha1)
        if not blob.is_file():
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
        return {"size": len(data), "blob": sha1}

    def store_lfs(self, data: bytes) -> dict:
        """Keep ``data`` as an LFS object; returns its tree entry."""
        oid = hashlib.sha256(data).hexdigest()
        obj = self.lfs_path(oid)
        if not obj.is_file():
            obj.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.storage / "tmp", prefix=f"{oid}.")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, obj)
        return {"size": len(data), "lfs": oid}

    # --- repos, commits and refs -----------------------------------------------------------
    def create_repo(self, repo: str, *, private: bool = False, gated: str | bool = False, owner: str | None = None) -> dict:
        """Create ``repo`` with an empty initial commit on main; an existing repo is returned unchanged."""
        with self.lock:
            meta = self.load_repo(repo)
            if meta is not None:
                return meta
            meta = {"id": repo, "private": private, "gated": gated, "access": [], "refs": {}, "tags": {},
                    "prs": [], "created": time.time()}
            meta["refs"]["main"] = self.make_commit(repo, None, {}, "initial commit", "")
            self.save_repo(repo, meta)
            return meta

    def make_commit(self, repo: str, parent: str | None, files: dict, title: str, description: str) -> str:
        """Record a commit holding the tree ``files``; moves no ref. Returns its sha."""
        body = {"parent": parent, "files": files, "title": title, "description": description, "time": time.time()}
        sha = hashlib.sha1(json.dumps(body, sort_keys=True).encode() + os.urandom(8)).hexdigest()
        write_json(self.repo_dir(repo) / "commits" / f"{sha}.json", body)
        return sha

    def resolve(self, meta: dict, rev: str) -> str | None:
        """The commit sha of a branch, tag, PR ref or sha."""
        rev = unquote(rev)
        if rev in meta["refs"]:
            return meta["refs"][rev]
        if rev in meta["tags"]:
            return meta["tags"][rev]
        if re.fullmatch(r"[0-9a-f]{40}", rev) and (self.repo_dir(meta["id"]) / "commits" / f"{rev}.json").is_file():
            return rev
        return None

    def sha(self, repo: str, rev: str = "main") -> str:
        """The commit sha that ``rev`` (branch, tag or sha) of ``repo`` names; KeyError when either is missing."""
        meta = self.load_repo(repo)
        if meta is None:
            raise KeyError(repo)
        sha = self.resolve(meta, rev)
        if sha is None:
            raise KeyError(rev)
        return sha

    def files(self, repo: str, rev: str = "main") -> dict[str, dict]:
        """The tree of ``repo`` at ``rev``: path -> {"size", "lfs": oid} or {"size", "blob": sha1}."""
        return dict(self.load_commit(repo, self.sha(repo, rev))["files"])

    def read_file(self, repo: str, path: str, rev: str = "main") -> bytes:
        return self.object_path(self.files(repo, rev)[path]).read_bytes()

    def commits(self, repo: str, rev: str = "main") -> list[dict]:
        """Commits from ``rev`` back to the first, newest first (each with its ``id``)."""
        meta = self.load_repo(repo)
        sha = self.resolve(meta, rev) if meta else None
        out = []
        while sha:
            commit = self.load_commit(repo, sha)
            out.append({"id": sha, **commit})
            sha = commit["parent"]
        return out

    def create_tag(self, repo: str, tag: str, rev: str = "main") -> str:
        """Tag the commit ``rev`` names; KeyError for an unknown rev, ValueError for a tag that exists."""
        with self.lock:
            meta = self.load_repo(repo)
            sha = self.resolve(meta, rev)
            if sha is None:
                raise KeyError(rev)
            if tag in meta["tags"]:
                raise ValueError(f"Tag {tag} already exists")
            meta["tags"][tag] = sha
            self.save_repo(repo, meta)
            return sha

    def create_branch(self, repo: str, branch: str, rev: str = "main") -> str:
        """Start ``branch`` at the commit ``rev`` names; KeyError for an unknown rev, ValueError for a branch that exists."""
        with self.lock:
            meta = self.load_repo(repo)
            if branch in meta["refs"]:
                raise ValueError(f"Reference refs/heads/{branch} already exists")
            sha = self.resolve(meta, rev)
            if sha is None:
                raise KeyError(rev)
            meta["refs"][branch] = sha
            self.save_repo(repo, meta)
            return sha

    def grant(self, repo: str, user: str) -> None:
        """Give ``user`` access to a gated or private repo."""
        with self.lock:
            meta = self.load_repo(repo)
            if meta is not None:
                meta["access"] = sorted(set(meta.get("access", [])) | {user})
                self.save_repo(repo, meta)

    # --- seeding (tests put repos in place without going through HTTP) ----------------------
    def add_commit(self, repo: str, files: dict[str, bytes], *, branch: str = "main",
                   message: str = "add files") -> str:
        """Commit ``files`` as the whole tree of ``branch`` of ``repo``; returns the new commit's sha.

        The repo (public, not gated: see ``create_repo`` for others) and the branch (from main) are
        created when missing. Files the Hub would keep in LFS (``upload_mode``) become LFS objects,
        the rest git blobs, so listings and downloads look as they would on the Hub.
        """
        tree = {path: (self.store_lfs(data) if upload_mode(path, len(data), data[:512]) == "lfs"
                       else self.store_blob(data)) for path, data in files.items()}
        with self.lock:
            meta = self.create_repo(repo)
            parent = meta["refs"].get(branch, meta["refs"]["main"])
            sha = self.make_commit(repo, parent, tree, message, "")
            meta["refs"][branch] = sha
            self.save_repo(repo, meta)
            return sha
