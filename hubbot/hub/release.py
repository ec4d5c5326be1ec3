"""Splitting a release over machines and joining the results: the CI matrix contract.

A release can run as one ``hubbot publish`` or spread over a GitHub Actions job matrix, one
variant per job. The pieces that make the spread version equal to the single-machine one:

- ``job_matrix(cfg, only)``: the units of work, read from the config alone (no source is
  fetched): per variant its file and whether the run needs the shared importance matrix; the
  benchmark reference is named once (a release stages it, so no build job builds it again);
- ``export_results(cfg, only, dest)``: what one job hands to the card job — its variants'
  manifest entries (plus the imatrix entry), and their bench results — as a folder that
  ``actions/upload-artifact`` can carry. The GGUF files themselves go to the Hub from the job;
- ``merge_results(cfg, folders)``: the card job's side: the union of the jobs' folders written
  into ``cfg.workdir``; two jobs that recorded the same file with different content are an error;
- ``check_split_options``: the flag combinations the two halves of a split publish accept; the
  halves themselves (``publish_files``, ``publish_card``) are in ``hubbot.pipeline``.

Folder layout (one per job, the same as a work directory's)::

    manifest.json            {"version": 1, "outputs": {file name: entry}}
    results/bench/<sha256>.json
    export.json              {"variants": [...], "engine": {...}, "hubbot": version}
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hubbot import __version__
from hubbot.card.upstream import cache_path
from hubbot.config import Config
from hubbot.config.recipes import FLOAT_TYPES
from hubbot.errors import HubbotError
from hubbot.manifest import ManifestEntry, read_outputs
from hubbot.workdir import Manifest, WorkDir, atomic_path, canonical_json, sha256_text, write_json_atomic

log = logging.getLogger(__name__)

EXPORT_INFO = "export.json"
UPSTREAM_CARD = "upstream-README.md"  # the source repo's card, as the job that resolved the source fetched it


class MergeError(HubbotError):
    """Job result folders are missing, corrupt or disagree with each other."""


def bench_reference(cfg: Config) -> str | None:
    """The variant bench compares against (benchmark.reference, else the first float variant), or None
    when the reference is the source itself (then no job needs to build an extra variant)."""
    if cfg.benchmark.reference:
        return cfg.variant(cfg.benchmark.reference).name
    return next((v.name for v in cfg.variants if v.type in FLOAT_TYPES), None)


def _relative(path: Path) -> str:
    """``path`` relative to the current folder when inside it (runners differ in their absolute roots)."""
    try:
        return Path(os.path.relpath(path)).as_posix() if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:
        return str(path)


def job_matrix(cfg: Config, only: Iterable[str] | None = None) -> dict[str, Any]:
    """The release's job list, from the config alone (cheap: nothing is fetched or built).

    Returns ``{"target", "config", "workdir", "source_key", "imatrix": bool, "auto": bool,
    "reference": name|None, "variants": [names], "matrix": {"include": [{"variant", "file", "imatrix",
    "auto"}]}}`` where ``imatrix`` says whether that job's build uses the shared importance matrix,
    ``auto`` whether it is a ``recipe: auto`` file (it needs the sensitivity the imatrix job
    measures once) and ``reference`` is the variant the benchmark compares with (None: the source).
    """
    names = [n for n in (only or []) if n]
    variants = [cfg.variant(n) for n in names] if names else list(cfg.variants)
    ref = bench_reference(cfg)
    include = []
    for v in variants:
        uses = v.needs_imatrix or (v.uses_imatrix and cfg.has_imatrix_source)
        include.append({"variant": v.name, "file": cfg.file_name(v), "imatrix": bool(uses), "auto": v.is_auto})
    # What the source cache holds depends only on the source section (not on the ladder).
    source_key = sha256_text(canonical_json(cfg.source.model_dump(mode="json")))[:16]
    return {
        "target": cfg.target.repo, "config": _relative(cfg.path), "workdir": _relative(cfg.workdir),
        "source_key": source_key,
        "imatrix": any(e["imatrix"] for e in include), "auto": any(e["auto"] for e in include), "reference": ref,
        "variants": [v.name for v in variants], "matrix": {"include": include},
    }


def _bench_file(work: WorkDir, sha256: str) -> Path:
    return work.results / "bench" / f"{sha256}.json"


def _with_file_facts(entry: ManifestEntry, path: Path) -> ManifestEntry:
    """The entry plus ``file_facts`` (output/embedding types, tying, tensor-type counts read from the
    file), which the card shows and the card job, never holding the GGUF files, could not read."""
    from hubbot.card.records import read_file_facts

    facts = read_file_facts(path) if path.is_file() else None
    return replace(entry, file_facts=facts) if facts else entry


def export_results(cfg: Config, only: Sequence[str], dest: Path) -> dict[str, Any]:
    """Copy the manifest entries and bench results of ``only`` (and the imatrix) into ``dest``.

    Variants that were not built are left out (a failed job exports what it has); returns
    ``{"folder", "files": [names], "results": [names with a bench result], "missing": [variants]}``.
    """
    if not only:
        raise MergeError("export needs --only NAME: one job exports the variants it built")
    work = WorkDir(cfg.workdir)
    manifest = work.manifest
    dest = Path(dest)
    (dest / "results" / "bench").mkdir(parents=True, exist_ok=True)
    entries: dict[str, ManifestEntry] = {}
    missing, results = [], []
    for name in only:
        v = cfg.variant(name)
        fname = cfg.file_name(v)
        entry = manifest.get(fname)
        if entry is None:
            missing.append(v.name)
            continue
        entries[fname] = _with_file_facts(entry, work.out / fname)
        bench = _bench_file(work, entry.sha256 or "")
        if entry.sha256 and bench.is_file():
            with atomic_path(_bench_file(WorkDir(dest), entry.sha256)) as tmp:
                shutil.copyfile(bench, tmp)
            results.append(fname)
    if any(e.imatrix for e in entries.values()):
        entries.update({f: e for f, e in manifest.entries.items() if e.is_imatrix})
    out = Manifest(dest / "manifest.json")
    out.entries = entries  # replaces whatever an earlier export left there
    out.save()
    # The upstream card travels with the results: the card job resolves no source, so it has no
    # other way to the licence, the gate and the text the card keeps.
    upstream = cache_path(cfg)
    if upstream.is_file():
        with atomic_path(dest / UPSTREAM_CARD) as tmp:
            shutil.copyfile(upstream, tmp)
    write_json_atomic(dest / EXPORT_INFO, {"variants": list(only), "hubbot": __version__,
                                           "config": _relative(cfg.path), "target": cfg.target.repo})
    return {"folder": str(dest), "files": sorted(entries), "results": results, "missing": missing}


def _comparable(entry: ManifestEntry) -> dict[str, Any]:
    # One machine's copy or run of a file (its mtimes, build time, peak memory) is never compared.
    return entry.portable().to_json()


def _read_folder(folder: Path) -> dict[str, ManifestEntry]:
    path = folder / "manifest.json"
    if not path.is_file():
        raise MergeError(f"{folder} holds no manifest.json; pass the folders `hubbot ci export` wrote")
    try:
        entries = read_outputs(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError):
        raise MergeError(f"{path} is corrupt; rerun that job's export") from None
    for name in entries:
        if "/" in name or "\\" in name or name.startswith("."):
            raise MergeError(f"{path} names {name!r}, which is not a plain file name; it was not written by hubbot")
    return entries


def merge_results(cfg: Config, folders: Sequence[Path]) -> dict[str, Any]:
    """Write the union of the job folders into ``cfg.workdir`` (manifest entries and bench results).

    Entries of the same file from several jobs (the shared imatrix, a reference variant built
    twice) must agree on their content; files built from different sources are refused too.
    Returns ``{"workdir", "files": [names], "results": count, "folders": count}``.
    """
    if not folders:
        raise MergeError("no result folders to merge; check that the build jobs uploaded their artifacts")
    ladder = {cfg.file_name(v) for v in cfg.variants}
    merged: dict[str, ManifestEntry] = {}
    seen_in: dict[str, Path] = {}
    sources: dict[str, Path] = {}
    for folder in sorted(Path(f) for f in folders):
        for name, entry in sorted(_read_folder(folder).items()):
            if entry.kind == "variant" and name not in ladder:
                raise MergeError(f"{folder}: {name} is not a file of {cfg.path.name}'s ladder; "
                                 "merge results made from the same config")
            src = entry.source.sha256 if entry.source else None
            if src:
                sources.setdefault(src, folder)
            if name in merged:
                if _comparable(merged[name]) != _comparable(entry):
                    old, new = merged[name].sha256 or "?", entry.sha256 or "?"
                    raise MergeError(f"{name} differs between {seen_in[name]} (sha256 {old[:12]}) and {folder} "
                                     f"(sha256 {new[:12]}); rerun the release so every job uses the same engine and source")
                continue
            merged[name], seen_in[name] = entry, folder
    if len(sources) > 1:
        shas = ", ".join(f"{s[:12]} ({f})" for s, f in sources.items())
        raise MergeError(f"the jobs built from different sources: {shas}; rerun the release from one source revision")

    work = WorkDir(cfg.workdir).prepare()
    manifest = work.manifest
    copied = 0
    for name, entry in merged.items():
        manifest.entries[name] = entry
        bench = _bench_file(WorkDir(seen_in[name]), entry.sha256 or "")
        if entry.sha256 and bench.is_file():
            with atomic_path(_bench_file(work, entry.sha256)) as tmp:
                shutil.copyfile(bench, tmp)
            copied += 1
    manifest.save()
    cards = [Path(f) / UPSTREAM_CARD for f in sorted(folders) if (Path(f) / UPSTREAM_CARD).is_file()]
    if cards and not cache_path(cfg).is_file():
        cache_path(cfg).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_path(cfg)) as tmp:
            shutil.copyfile(cards[0], tmp)
    log.info("merged %d files and %d bench results from %d folders into %s", len(merged), copied, len(folders), work.root)
    return {"workdir": str(work.root), "files": sorted(merged), "results": copied, "folders": len(folders)}


# --- pushing from the matrix ---------------------------------------------------------------------

def check_split_options(only: Sequence[str], no_card: bool, card_only: bool, create_pr: bool, prune: bool,
                        tag: str | None) -> None:
    """MergeError for option combinations the split publish cannot honour."""
    if no_card and card_only:
        raise MergeError("--no-card and --card-only exclude each other: the build jobs use the first, the card job the second")
    if card_only and only:
        raise MergeError("--card-only publishes the card for every merged file; drop --only")
    if no_card and not only:
        raise MergeError("--no-card needs --only NAME (the variants this job uploads); use a plain publish otherwise")
    if create_pr:
        raise MergeError("--create-pr opens one pull request per publish; the job matrix commits to a branch instead (--revision)")
    if no_card and (prune or tag):
        raise MergeError("--prune and --tag belong to the card job (--card-only), which sees the whole ladder")
