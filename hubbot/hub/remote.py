"""The remote side of a publish: the repo's state at one revision, and how it differs from the local files.

Nothing local is read to compute the difference: LFS files are compared by size and the sha256
the manifest recorded, small git files (README.md) by their git blob id.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hubbot.gguf_io.info import SHARD_RE
from hubbot.hub.client import hub_errors, with_retries
from hubbot.hub.local import LocalFile


@dataclass
class RemoteFile:
    size: int
    sha256: str | None  # LFS files only
    blob_id: str


@dataclass
class RemoteState:
    exists: bool
    head: str | None = None
    files: dict[str, RemoteFile] = field(default_factory=dict)
    gated: Any = None


@dataclass
class Change:
    action: str  # "add", "update", "unchanged" or "delete"
    name: str
    size: int
    local: LocalFile | None = None

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "file": self.name, "size": self.size,
                "sha256": self.local.sha256 if self.local else None}


@dataclass
class PushContext:
    """One push's client and place, and the bytes sent so far (shared by the upload threads)."""

    api: Any
    repo: str
    endpoint: str
    revision: str
    create_pr: bool
    uploaded: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hub(self, action: str):
        return hub_errors(self.repo, action, self.endpoint, self.revision)


def read_remote(ctx: PushContext, revision: str | None = None) -> RemoteState:
    """The repo's head at ``revision`` (default: the context's) and its files with LFS hashes."""
    from huggingface_hub import errors as hf

    rev = revision or ctx.revision
    api = ctx.api

    def info():
        try:
            return api.model_info(ctx.repo, revision=rev)
        except hf.RevisionNotFoundError:
            return "no-revision"
        except hf.RepositoryNotFoundError as exc:
            if getattr(getattr(exc, "response", None), "status_code", 404) == 401 and api.token:
                raise
            return None

    with ctx.hub("reading the repo"):
        found = with_retries(info, "reading the repo")
    if found is None:
        return RemoteState(exists=False)
    if found == "no-revision":
        return RemoteState(exists=True, head=None)
    head = found.sha
    with ctx.hub("listing the repo's files"):
        entries = with_retries(lambda: list(api.list_repo_tree(ctx.repo, revision=head, recursive=True)),
                               "listing the repo's files")
    files = {}
    for e in entries:
        if getattr(e, "lfs", None) is not None or hasattr(e, "blob_id"):
            lfs = getattr(e, "lfs", None)
            files[e.path] = RemoteFile(e.size, lfs.sha256 if lfs else None, e.blob_id)
    return RemoteState(exists=True, head=head, files=files, gated=getattr(found, "gated", None))


def diff(local: list[LocalFile], remote: RemoteState) -> list[Change]:
    """add / update / unchanged for each local file, from sizes and hashes only (no file is read)."""
    changes = []
    for f in local:
        r = remote.files.get(f.name)
        if r is None:
            changes.append(Change("add", f.name, f.size, f))
        elif r.size == f.size and _same(f, r):
            changes.append(Change("unchanged", f.name, f.size, f))
        else:
            changes.append(Change("update", f.name, f.size, f))
    return changes


def _same(f: LocalFile, r: RemoteFile) -> bool:
    from huggingface_hub.utils.sha import git_hash

    if r.sha256 is not None:
        return r.sha256 == f.sha256
    # A small file stored directly in git (README.md): compare git blob ids; it is small to read.
    return f.role == "card" and git_hash(f.path.read_bytes()) == r.blob_id


def _stem(name: str) -> str:
    """A ladder file's stem: the name without .gguf, or without the shard suffix."""
    m = SHARD_RE.match(name)
    return m.group("stem") if m else name.removesuffix(".gguf")


def in_ladder(stems: Iterable[str], name: str) -> bool:
    """True when ``name`` is a variant's file (or one of its shards) for the ladder file stems ``stems``."""
    stems = set(stems)
    return name.removesuffix(".gguf") in stems or _stem(name) in stems


def prune_candidates(stems: Iterable[str], local: list[LocalFile], remote: RemoteState, keep: set[str]) -> list[Change]:
    """Remote GGUF files that hubbot would not publish now: ones that left the ladder or were re-sharded."""
    names = {f.name for f in local} | keep
    out = []
    for name, r in sorted(remote.files.items()):
        if name in names or not name.endswith(".gguf"):
            continue
        if in_ladder(stems, name) and not _superseded(name, names):
            continue
        out.append(Change("delete", name, r.size))
    return out


def _superseded(name: str, names: set[str]) -> bool:
    """True when ``name`` is a ladder file that is now published in another form (whole vs shards)."""
    stem = _stem(name)
    return any(n != name and n.endswith(".gguf") and _stem(n) == stem for n in names)
