"""The work directory: content hashes, the manifest, atomic writes and disk checks.

Layout under ``build.workdir`` (default ``.hubbot/`` next to variants.yaml)::

    out/            the files to publish (GGUF variants, imatrix, card)
    cache/          converted or dequantized sources, imatrices, reference logits
    manifest.json   one entry per output (hubbot.manifest.ManifestEntry): sha256, size, recipe and the
                    inputs it was built from

Every file lands under a temporary name and is renamed into place only when complete, so an
interrupted run never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from hubbot.errors import DiskSpaceError, HubbotError, file_in_the_way
from hubbot.manifest import ManifestEntry, read_outputs

_HASH_BLOCK = 16 * 1024 * 1024


def _file_mode() -> int:
    # mkstemp creates 0600 files; finished outputs get the mode a plain open() would give them.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def temp_path(final: Path) -> Path:
    """A fresh temporary file next to ``final`` (same file system, so the rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    return Path(tmp)


def sha256_file(path: Path, progress=None) -> str:
    """Hex sha256 of a file, read in large blocks (optionally advancing a byte progress bar)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(_HASH_BLOCK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
            if progress is not None:
                progress.update(n)
    return digest.hexdigest()


def sha256_text(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def canonical_json(data: Any) -> str:
    """Stable JSON (sorted keys, no spaces) so equal recipes hash equally."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place only on success."""
    tmp_path = temp_path(Path(final))
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def remove_partials(folder: Path) -> None:
    """Delete temporaries a killed run left behind."""
    if folder.is_dir():
        for leftover in folder.glob(".*.partial"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def check_output_path(path: Path, option: str, *, folder: bool = False) -> None:
    """HubbotError, before any work, when ``path`` (given as ``option``) cannot be written as a file
    (or, with ``folder``, created as a folder)."""
    path = Path(path)
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        raise HubbotError(f"{option} {path}: {blocker} is a file, not a folder; choose a path inside a folder")
    if folder and path.exists() and not path.is_dir():
        raise HubbotError(f"{option} {path} is a file; give a folder (it is created when missing)")
    if not folder and path.is_dir():
        raise HubbotError(f"{option} {path} is a folder; give a file name, e.g. {path / 'README.md'}")


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """DiskSpaceError unless ``folder``'s file system has ``needed`` bytes (+5%) free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    margin = int(needed * 1.05)
    if free < margin:
        raise DiskSpaceError(
            f"not enough disk space for {what}: need {human_bytes(margin)}, "
            f"{human_bytes(free)} free in {folder}; free some space or set build.workdir elsewhere"
        )


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


class Manifest:
    """``manifest.json``: output file name -> ``ManifestEntry``. Saved atomically after every change."""

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, ManifestEntry] = {}
        if self.path.exists():
            try:
                self.entries = read_outputs(json.loads(self.path.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError):
                raise HubbotError(
                    f"{self.path} is corrupt; delete it to rebuild the outputs' records"
                ) from None

    def get(self, file_name: str) -> ManifestEntry | None:
        return self.entries.get(file_name)

    def put(self, file_name: str, entry: ManifestEntry) -> None:
        self.entries[file_name] = entry
        self.save()

    def remove(self, file_name: str) -> None:
        if self.entries.pop(file_name, None) is not None:
            self.save()

    def save(self) -> None:
        outputs = {name: e.to_json() for name, e in self.entries.items()}
        write_json_atomic(self.path, {"version": self.VERSION, "outputs": outputs})


class WorkDir:
    """Paths of one project's work directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.out = self.root / "out"
        self.cache = self.root / "cache"
        self.results = self.root / "results"

    def prepare(self) -> "WorkDir":
        for d in (self.out, self.cache, self.results):
            if (blocker := file_in_the_way(d)) is not None:
                raise HubbotError(f"work directory {self.root}: {blocker} is a file, not a folder; set build.workdir "
                                  "in variants.yaml to a folder path, or move that file away")
        for d in (self.out, self.cache, self.results):
            d.mkdir(parents=True, exist_ok=True)
            remove_partials(d)
        return self

    @property
    def manifest(self) -> Manifest:
        return Manifest(self.root / "manifest.json")

    def output(self, file_name: str) -> Path:
        path = (self.out / file_name).resolve()
        # Defence in depth: config validation already forbids folders in names.
        if path.parent != self.out.resolve():
            raise HubbotError(f"output {file_name!r} would land outside {self.out}; use a plain file name")
        return path
