"""The local side of a publish: which files of the work directory go to the Hub, with their sha256.

Ladder files come from the manifest (hashes recorded when they were built, trusted while size
and mtime still match), split into shards where ``target.max_shard_size`` asks; card files are
small and hashed as they are.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hubbot.config import Config, parse_size
from hubbot.manifest import ManifestEntry
from hubbot.progress import bar
from hubbot.workdir import WorkDir, sha256_file

log = logging.getLogger(__name__)

CARD_NAME = "README.md"


@dataclass
class LocalFile:
    """A file to publish: its name in the repo, where it is, and its manifest size and sha256."""

    name: str
    path: Path
    size: int
    sha256: str
    role: str  # "variant", "shard", "imatrix" or "card"


def _manifest_sha(path: Path, entry: ManifestEntry) -> str:
    """The manifest's sha256 when size and mtime still match the file, else a fresh hash."""
    st = path.stat()
    if entry.is_fresh(path) and entry.sha256:
        return entry.sha256
    log.warning("%s changed since it was recorded; hashing it again", path.name)
    with bar(st.st_size, f"sha256 {path.name}", unit="B") as pbar:
        return sha256_file(path, pbar)


def ladder_files(cfg: Config, work: WorkDir, only: Iterable[str] | None = None) -> list[LocalFile]:
    """Built files of the selected variants (shards where ``max_shard_size`` asks), plus the imatrix."""
    from hubbot.gguf_io.shard import ensure_shards

    manifest = work.manifest
    max_size = parse_size(cfg.target.max_shard_size) if cfg.target.max_shard_size is not None else None
    names = set(only or [])
    out: list[LocalFile] = []
    for v in cfg.variants:
        if names and v.name not in names:
            continue
        fname = cfg.file_name(v)
        entry = manifest.get(fname)
        path = work.out / fname
        if entry is None or not path.is_file():
            continue
        if max_size is not None and (entry.size or 0) > max_size:
            for s in ensure_shards(work, fname, max_size):
                assert s.size is not None and s.sha256 is not None
                out.append(LocalFile(s.file, work.out / s.file, s.size, s.sha256, "shard"))
            continue
        out.append(LocalFile(fname, path, path.stat().st_size, _manifest_sha(path, entry), "variant"))
    for fname, entry in manifest.entries.items():
        path = work.out / fname
        if entry.is_imatrix and path.is_file():
            out.append(LocalFile(fname, path, path.stat().st_size, _manifest_sha(path, entry), "imatrix"))
    return out


def ladder_stems(cfg: Config) -> frozenset[str]:
    """File-name stems of every variant of the ladder (a variant's file is the stem, its shards start with it)."""
    return frozenset(cfg.file_name(v).removesuffix(".gguf") for v in cfg.variants)


def card_files(paths: Iterable[Path], out: Path) -> list[LocalFile]:
    """The written card files (README.md and its assets, inside ``out``) as files to publish, README.md last."""
    files = []
    for p in paths:
        try:
            name = p.resolve().relative_to(out.resolve()).as_posix()
        except ValueError:
            name = p.name
        if p.name == CARD_NAME:
            name = CARD_NAME
        data = p.read_bytes()
        files.append(LocalFile(name, p, len(data), hashlib.sha256(data).hexdigest(), "card"))
    # The card goes last within its commit too (assets first), matching the card-last rule.
    return sorted(files, key=lambda f: f.name == CARD_NAME)
