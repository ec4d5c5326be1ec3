"""The source as a plan needs it: its header, without downloading its weights.

llama.cpp's dry run reads a GGUF's metadata and tensor descriptions only, and checks that the file
is long enough for the tensor data it describes. A *stand-in* is the source's real header followed
by a hole of the right length (a sparse file): the dry run gives exactly the types and sizes it
gives for the real file, and the stand-in of a 54 GB model takes a few MB of disk.

Where the header comes from, by source kind:

- a local GGUF, a local checkpoint, a GGUF shipped in a Python package: the source itself,
  resolved as a build resolves it (these are on the machine already);
- a GGUF file in a Hub repo: its header (and each shard's), read with HTTP range requests; its
  sha256 comes from the Hub's LFS metadata, so build keys can be computed exactly;
- a safetensors repo: a conversion cached by an earlier run when there is one; otherwise the
  full-precision variant (``source.dtype``) already published in the target repo, which *is* the
  converted source plus hubbot's metadata keys (its sha256 is the one its build recorded, valid
  while the source repo's commit is the same). Without either, the tensor inventory would need
  the converter and so the weights: ``standin_source`` returns None and says why.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from hubbot.card.published import PublishedRecords
from hubbot.config import Config
from hubbot.errors import SourceError
from hubbot.gguf_io.header import write_standin
from hubbot.gguf_io.info import read_info_cached
from hubbot.hub.client import hub_errors, make_api
from hubbot.hub.published import PublishedRepo
from hubbot.hub.ranges import fetch_gguf_header
from hubbot.hub.token import hub_token
from hubbot.manifest import ManifestEntry, SourceRecord
from hubbot.source.resolve import ResolvedSource, resolve_source

log = logging.getLogger(__name__)


@dataclass
class PlanSource:
    """The source for planning: a ResolvedSource (maybe a stand-in), or None and the reason there is none."""

    source: ResolvedSource | None
    note: str | None = None  # why some part could not be planned (one line), or where the header came from


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", text)


def _standin(folder: Path, files: dict[str, int], repo: str, revision: str, endpoint: str, token: str | None,
             role: str) -> Path:
    """Stand-ins of ``files`` (name -> size; shards keep their names, so llama.cpp finds them); the first."""
    paths = []
    for name, size in files.items():
        path = folder / Path(name).name
        if not (path.is_file() and path.stat().st_size == size):
            header = fetch_gguf_header(repo, name, revision, size, endpoint=endpoint, token=token, role=role)
            write_standin(header, size, path)
        paths.append(path)
    return paths[0]


def _checked(path: Path, cfg: Config, cache: Path) -> ResolvedSource:
    info = read_info_cached(path, cache)
    if info.block_count <= 0 or not info.tensors:
        raise SourceError(f"{path.name}: no transformer blocks or tensors found; is this a language model GGUF?")
    return ResolvedSource(path=path, sha256="", kind="", origin="", info=info)


def _hub_gguf(cfg: Config, cache: Path) -> PlanSource:
    from hubbot.source.fetch import repo_listing

    src = cfg.source
    assert src.repo and src.file
    listing = repo_listing(src.repo, src.revision, cfg)
    names = listing.gguf_files(src.file)
    api = make_api(cfg)
    with hub_errors(src.repo, f"reading {src.file}", api.endpoint, listing.revision, role="source", filename=src.file):
        infos = api.get_paths_info(src.repo, [src.file], revision=listing.revision)
    lfs = getattr(infos[0], "lfs", None) if infos else None
    folder = cache / "standin" / _slug(src.repo) / listing.revision
    first = _standin(folder, {n: listing.files[n] or 0 for n in names}, src.repo, listing.revision, api.endpoint,
                     hub_token(), "source")
    found = _checked(first, cfg, cache)
    if found.info is not None and found.info.is_quantized and (src.dequantize or not src.allow_requantize):
        return PlanSource(None, f"{src.repo}/{src.file} is quantized and would be expanded or refused: the plan "
                                "needs the downloaded file")
    found.sha256 = lfs.sha256 if lfs is not None else ""
    found.kind, found.origin = "hub-gguf", f"{src.repo}/{src.file}"
    found.repo, found.revision = src.repo, listing.revision
    return PlanSource(found, f"source header read from {src.repo}/{src.file} (range requests, no weights)")


def _published_float(cfg: Config, records: PublishedRecords | None) -> tuple[str, ManifestEntry] | None:
    """(file name, entry) of a published variant that is the converted source: type source.dtype, same repo."""
    if records is None:
        return None
    want = cfg.source.dtype.upper()
    for fname, entry in records.entries().items():
        plain = not (entry.overrides or entry.output or entry.embeddings)
        if plain and entry.type == want and (entry.source or SourceRecord()).repo == cfg.source.repo:
            return fname, entry
    return None


def _hub_safetensors(cfg: Config, cache: Path, published: PublishedRepo | None) -> PlanSource:
    from hubbot.source.convert import converted_path
    from hubbot.source.fetch import repo_listing

    src = cfg.source
    assert src.repo
    listing = repo_listing(src.repo, src.revision, cfg)
    if converted_path(cache, src.repo, listing.revision, src.dtype).is_file():
        return PlanSource(resolve_source(cfg, cache), None)
    found = _published_float(cfg, published.records if published else None)
    if published is None or found is None:
        return PlanSource(None, f"{src.repo} is a safetensors checkpoint and no {src.dtype.upper()} variant of it is "
                                f"published in {cfg.target.repo} yet: sizes of unbuilt files need the converted "
                                "source (run `hubbot plan` where the weights are)")
    fname, entry = found
    remote_sizes = {name: f.size for name, f in published.files.items()}
    shards = [s.file for s in entry.shard_files]
    names = [n for n in shards if n in remote_sizes] if shards and all(n in remote_sizes for n in shards) else [fname]
    if any(n not in remote_sizes for n in names):
        return PlanSource(None, f"{fname} is recorded but not on {cfg.target.repo}; sizes of unbuilt files need the "
                                "converted source")
    api = make_api(cfg)
    folder = cache / "standin" / _slug(cfg.target.repo) / _slug(fname)
    assert published.head is not None
    first = _standin(folder, {n: remote_sizes[n] for n in names}, cfg.target.repo, published.head, api.endpoint,
                     api.token, "target")
    plan = _checked(first, cfg, cache)
    recorded = entry.source or SourceRecord()
    # The recorded sha256 is the conversion of the recorded commit; a newer commit is converted anew.
    plan.sha256 = (recorded.sha256 or "") if recorded.revision == listing.revision else ""
    plan.kind, plan.origin = "hub-safetensors", f"{src.repo} (converted to {src.dtype.upper()})"
    plan.repo, plan.revision = src.repo, listing.revision
    note = f"source header read from the published {fname} (range requests, no weights)"
    if not plan.sha256:
        note += f"; {src.repo} moved to commit {listing.revision[:12]} since, so every file will be rebuilt"
    return PlanSource(plan, note)


def _upstream_card(cfg: Config, revision: str | None) -> None:
    """Fetch the upstream README as a build would (the card copies its licence and gate from it)."""
    from hubbot.card.upstream import cache_path
    from hubbot.source.fetch import fetch_upstream_card

    src = cfg.source
    if src.card or not src.repo:
        return
    card_repo = src.base_model or src.repo
    fetch_upstream_card(card_repo, revision if card_repo == src.repo else None, cache_path(cfg), cfg)


def _not_here(cfg: Config) -> str | None:
    """Why a local source cannot be planned on this machine (a CI runner has no local weights), or None."""
    import importlib.util

    src = cfg.source
    if src.python_package and importlib.util.find_spec(src.python_package.replace("-", "_")) is None:
        return (f"source package {src.python_package} is not installed here, so files not built yet cannot be "
                f"planned (pip install {src.python_package})")
    if src.path and not cfg.resolve_path(src.path).exists():
        return f"source {src.path} is not on this machine, so files not built yet cannot be planned"
    return None


def standin_source(cfg: Config, cache: Path, published: PublishedRepo | None = None) -> PlanSource:
    """The source for a plan, without downloading weights that are not on this machine.

    ``published`` is the target repo, where the full-precision variant of a safetensors source
    may be published already.
    """
    src = cfg.source
    if src.path or src.python_package:
        absent = _not_here(cfg)
        return PlanSource(None, absent) if absent else PlanSource(resolve_source(cfg, cache), None)
    found = _hub_gguf(cfg, cache) if src.file else _hub_safetensors(cfg, cache, published)
    _upstream_card(cfg, found.source.revision if found.source else src.revision)
    return found
