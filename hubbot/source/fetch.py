"""Downloads of source models from the Hub: pinned to a commit, cached, resumable, only what is needed.

Everything goes through ``huggingface_hub`` (its cache gives resume and reuse across projects).
A branch or tag is resolved to its commit sha once, and every file is then fetched at that sha,
so one run never mixes two commits. The client, the token and the one-line ``SourceError``s
that say what to do (token, access, names, an unreachable endpoint) come from ``hubbot.hub.client``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hubbot.config import Config
from hubbot.errors import SourceError
from hubbot.gguf_io.info import SHARD_RE
from hubbot.hub.client import hub_endpoint, hub_errors, make_api
from hubbot.hub.token import hub_token
from hubbot.source.checkpoint import CONVERTER_FILES
from hubbot.workdir import check_free_space, human_bytes

log = logging.getLogger(__name__)

COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, read from the environment now (its constants are read at import)."""
    if env := os.environ.get("HF_HUB_CACHE"):
        return Path(env).expanduser()
    if env := os.environ.get("HF_HOME"):
        return Path(env).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub"


@contextlib.contextmanager
def _source_errors(repo: str, revision: str | None, endpoint: str | None, filename: str | None = None) -> Iterator[None]:
    """Hub and network failures inside the block as one-line SourceErrors (the shared mapper, source wording)."""
    with hub_errors(repo, f"fetching {repo}", endpoint, revision, role="source", filename=filename):
        yield


@dataclass
class RepoListing:
    """A source repo at one resolved commit: its files and their sizes."""

    repo: str
    revision: str  # commit sha
    requested: str | None
    files: dict[str, int | None] = field(default_factory=dict)
    endpoint: str | None = None

    def size(self, names: list[str]) -> int:
        return sum(self.files.get(n) or 0 for n in names)

    def ggufs(self) -> list[str]:
        return sorted(f for f in self.files if f.endswith(".gguf"))

    def gguf_files(self, name: str) -> list[str]:
        """``name`` and, for the first shard of a split GGUF, all its shards (all must exist)."""
        if name not in self.files:
            known = ", ".join(self.ggufs()[:8]) or "none"
            raise SourceError(f"file {name!r} not found in source repo {self.repo} at {self.revision[:12]}; "
                              f"GGUF files there: {known}; check source.file")
        m = SHARD_RE.match(Path(name).name)
        if not m:
            return [name]
        n = int(m.group("n"))
        folder = str(Path(name).parent)
        prefix = "" if folder == "." else folder + "/"
        shards = [f"{prefix}{m.group('stem')}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
        missing = [s for s in shards if s not in self.files]
        if missing:
            raise SourceError(f"split GGUF {name} in {self.repo} is missing {', '.join(missing)}; the repo is incomplete")
        return shards

    def conversion_files(self) -> list[str]:
        """Top-level files llama.cpp's converter needs: config, tokenizer and safetensors weights."""
        top = [f for f in self.files if "/" not in f]
        weights = sorted(f for f in top if f.endswith(".safetensors"))
        if not weights:
            if self.ggufs():
                raise SourceError(f"source repo {self.repo} has no safetensors weights but has GGUF files "
                                  f"({', '.join(self.ggufs()[:4])}); set source.file to one of them")
            if any(f.endswith((".bin", ".pth", ".pt")) for f in top):
                raise SourceError(f"source repo {self.repo} has only PyTorch pickle weights; hubbot converts "
                                  "safetensors checkpoints only (pickles can run code when loaded)")
            raise SourceError(f"source repo {self.repo} has no model weights (*.safetensors) at {self.revision[:12]}")
        if "config.json" not in top:
            raise SourceError(f"source repo {self.repo} has no config.json; it is not a transformers checkpoint")
        extra = [f for f in top if f in CONVERTER_FILES or f.endswith(".safetensors.index.json")]
        return sorted(set(weights) | set(extra))


def repo_listing(repo: str, revision: str | None, cfg: Config | None) -> RepoListing:
    """Resolve ``revision`` (default main) of model repo ``repo`` to its commit sha and list its files."""
    api = make_api(cfg)
    endpoint = api.endpoint
    with _source_errors(repo, revision, endpoint):
        info = api.model_info(repo, revision=revision or "main", files_metadata=True)
        sha = info.sha
        if not sha:
            raise SourceError(f"the Hub did not report a commit for {repo}@{revision or 'main'}; retry later")
        files = {s.rfilename: s.size for s in (info.siblings or [])}
        if files and any(v is None for v in files.values()):
            # Some servers omit sizes in model_info; the tree listing always has them.
            for entry in api.list_repo_tree(repo, revision=sha, recursive=True):
                if hasattr(entry, "size"):
                    files[entry.path] = entry.size
    log.info("source %s@%s resolved to commit %s (%d files)", repo, revision or "main", sha, len(files))
    return RepoListing(repo=repo, revision=sha, requested=revision, files=files, endpoint=endpoint)


def _cached(listing: RepoListing, name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(listing.repo, name, cache_dir=hub_cache_dir(), revision=listing.revision)
    return isinstance(hit, str)


def missing_bytes(listing: RepoListing, names: list[str]) -> int:
    """Bytes still to download for ``names`` (files already in the Hub cache cost nothing)."""
    return sum(listing.files.get(n) or 0 for n in names if not _cached(listing, n))


@contextlib.contextmanager
def _progress_bars() -> Iterator[None]:
    """huggingface_hub's own byte bars follow hubbot's progress setting."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    from hubbot.progress import enabled

    was_disabled = are_progress_bars_disabled()
    if not enabled():
        disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def fetch_gguf(listing: RepoListing, name: str) -> Path:
    """Download ``name`` (and its sibling shards) at the listing's commit; the local path of ``name``."""
    from huggingface_hub import hf_hub_download

    names = listing.gguf_files(name)
    need = missing_bytes(listing, names)
    cache = hub_cache_dir()
    if need:
        check_free_space(cache, need, f"downloading {name} ({human_bytes(need)})")
        log.info("downloading %s from %s@%s (%s)", name, listing.repo, listing.revision[:12], human_bytes(need))
    paths = []
    with _progress_bars():
        for n in names:
            with _source_errors(listing.repo, listing.revision, listing.endpoint, n):
                paths.append(Path(hf_hub_download(listing.repo, n, revision=listing.revision, cache_dir=cache,
                                                  endpoint=listing.endpoint, token=hub_token())))
    return paths[names.index(name) if name in names else 0]


def fetch_snapshot(listing: RepoListing, names: list[str], cfg: Config | None) -> Path:
    """Download only ``names`` of the repo at the listing's commit; the snapshot folder holding them."""
    from huggingface_hub import snapshot_download

    need = missing_bytes(listing, names)
    cache = hub_cache_dir()
    if need:
        check_free_space(cache, need, f"downloading {listing.repo} ({human_bytes(need)})")
        log.info("downloading %d files of %s@%s (%s)", len(names), listing.repo, listing.revision[:12],
                 human_bytes(need))
    with _progress_bars(), _source_errors(listing.repo, listing.revision, listing.endpoint):
        folder = snapshot_download(listing.repo, revision=listing.revision, cache_dir=cache,
                                   allow_patterns=[glob.escape(n) for n in names], endpoint=listing.endpoint,
                                   token=hub_token())
    folder = Path(folder)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise SourceError(f"download of {listing.repo} is incomplete (missing {', '.join(missing[:4])}); rerun to resume")
    return folder


def download_gguf(repo: str, file: str, revision: str | None, cfg: Config | None) -> tuple[Path, str]:
    """A GGUF file of a Hub repo, pinned: (local path, resolved commit sha)."""
    if revision and COMMIT_SHA.match(revision) and not SHARD_RE.match(Path(file).name):
        # Pinned to a commit and already downloaded: no request at all (works offline).
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo, file, cache_dir=hub_cache_dir(), revision=revision)
        if isinstance(hit, str):
            return Path(hit), revision
    listing = repo_listing(repo, revision, cfg)
    return fetch_gguf(listing, file), listing.revision


def fetch_upstream_card(repo: str, revision: str | None, target: Path, cfg: Config | None) -> Path | None:
    """Copy ``repo``'s README.md (at ``revision``) to ``target`` for the card; None when it has none.

    The card keeps the upstream licence and gate keys from it, so a Hub source needs no local copy.
    Pinned revisions that were fetched before cost no request.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from hubbot.workdir import atomic_path

    endpoint = hub_endpoint(cfg)
    try:
        with _source_errors(repo, revision, endpoint, "README.md"):
            path = Path(hf_hub_download(repo, "README.md", revision=revision or "main", cache_dir=hub_cache_dir(),
                                        endpoint=endpoint, token=hub_token()))
    except SourceError as exc:
        if isinstance(exc.__cause__, EntryNotFoundError) or "not found" in str(exc).lower():
            log.info("%s has no README.md; the card will carry no upstream card", repo)
            return None
        raise
    with atomic_path(target) as tmp:
        tmp.write_bytes(path.read_bytes())
    return target
