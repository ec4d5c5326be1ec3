"""The card preview: the card a change to variants.yaml would publish, before anything is built.

``hubbot card --preview`` (what the card-preview workflow runs on a pull request) composes the
card from three places, per variant of the ladder:

- a file built in this work directory: its own record and figures, as ``hubbot card`` shows it;
- a file already published and unchanged (its build key, worked out from the plan, equals the
  key recorded in the target repo's ``hubbot-results.json``): the published record and figures;
- anything else: llama.cpp's plan for it (exact tensor types, size and bits per weight from the
  dry run of the source's header, see ``hubbot.source.standin``), marked "not yet measured".

It also says in one line what changed against the published card: variants added, removed and
rebuilt (a build key differs: recipe, source, importance matrix, engine or hubbot version).
Nothing is written to the Hub and no weights are downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from hubbot.build.limits import check_shard_size
from hubbot.build.run import default_threads
from hubbot.build.spec import VariantPlan, check_rules, placeholder_imatrix, plan_variant, tensor_nbytes
from hubbot.card.published import PublishedRecords
from hubbot.card.records import gather
from hubbot.card.render import RenderedCard, render
from hubbot.card.upstream import load_upstream
from hubbot.config import Config, VariantConfig, parse_size
from hubbot.gguf_io.info import SHARD_RE, read_info
from hubbot.gguf_io.shard import planned_shard_sizes, shard_names
from hubbot.hub.published import PublishedRepo, read_published
from hubbot.imatrix.ref import ImatrixRef
from hubbot.llama.version import engine_version
from hubbot.manifest import Engine, FileFacts, ImatrixUse, ManifestEntry, Shard, Shards
from hubbot.source.resolve import ResolvedSource
from hubbot.source.standin import standin_source
from hubbot.workdir import WorkDir

log = logging.getLogger(__name__)

MAX_NAMES = 6  # variant names listed per kind of change before "and N more"


@dataclass
class Change:
    variant: str
    file: str
    status: str  # "added", "rebuilt", "unchanged", "removed", or "unchecked" (published, but no plan to compare)


@dataclass
class Preview:
    """The rendered preview card, what changed against the published one, and notes on what could not be planned."""

    card: RenderedCard
    repo: str
    published: bool  # the target repo exists
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def names(self, status: str) -> list[str]:
        return [c.variant for c in self.changes if c.status == status]

    def line(self) -> str:
        """One line: what this ladder adds, removes and rebuilds against the published card."""
        if not self.published:
            return f"changes against {self.repo}: nothing is published yet; all {len(self.names('added'))} variants are new"
        parts = []
        for status in ("added", "removed", "rebuilt", "unchanged", "unchecked"):
            names = self.names(status)
            if status == "unchecked" and not names:
                continue
            shown = ""
            if names and status != "unchanged":
                more = f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else ""
                shown = f" ({', '.join(names[:MAX_NAMES])}{more})"
            parts.append(f"{len(names)} {'not checked' if status == 'unchecked' else status}{shown}")
        return f"changes against {self.repo}: " + ", ".join(parts)


def _stem(name: str) -> str:
    m = SHARD_RE.match(name)
    return m.group("stem") if m else name.removesuffix(".gguf")


def _on_hub(published: PublishedRepo, fname: str, entry: ManifestEntry) -> list[str] | None:
    """The repo's files of a recorded variant (whole, or the shards its record names); None when missing."""
    shards = [s.file for s in entry.shard_files]
    for names in ([fname], shards):
        if names and all(n in published.files for n in names):
            return names
    return None


def _local_entries(cfg: Config, work: WorkDir) -> dict[str, ManifestEntry]:
    """Variants built in this work directory (a record and the file)."""
    manifest = work.manifest.entries
    out = {}
    for v in cfg.variants:
        fname = cfg.file_name(v)
        entry = manifest.get(fname)
        if entry and entry.is_variant and (work.out / fname).is_file():
            out[fname] = entry
    return out


def _expected_imatrix(cfg: Config, source: ResolvedSource, work: WorkDir, records: PublishedRecords | None,
                      threads: int) -> tuple[ImatrixRef | None, ManifestEntry | None]:
    """The importance matrix a build would use, when it is known without computing it: one in this work
    directory, else the published one when its key is the one this config gives. (ref, record to show)."""
    from hubbot.imatrix.ensure import cache_key, ensure_imatrix, out_name, read_text_file

    ref = ensure_imatrix(cfg, source, work, threads=threads, compute=False)
    if ref is not None:
        return ref, work.manifest.get(ref.path.name)
    name = out_name(cfg)
    entry = records.imatrix_entry(name) if records else None
    if entry is None or cfg.imatrix.calibration is None or not source.sha256:
        return None, None
    calib = read_text_file(cfg, cfg.imatrix.calibration)
    if cache_key(source, calib, cfg.imatrix.ctx, cfg.imatrix.chunks) != entry.input_key:
        return None, None
    assert source.info is not None and entry.sha256 is not None
    ref = ImatrixRef(path=Path(name), sha256=entry.sha256, dataset=entry.calibration or calib.name,
                     chunks=entry.chunks or 0, entries=entry.entries or 0, values=placeholder_imatrix(source.info))
    return ref, replace(entry, published=True)


def _planned_entry(cfg: Config, v: VariantConfig, p: VariantPlan, source: ResolvedSource,
                   key: str | None) -> ManifestEntry:
    """A manifest-like record of a variant not built yet, from its dry run."""
    assert p.report is not None and source.info is not None
    types = {t.name: t.type for t in p.report.tensors}
    emb, out = types.get("token_embd.weight"), types.get("output.weight")
    uses = v.uses_imatrix and cfg.has_imatrix_source
    calibration = cfg.imatrix.calibration.display_name if cfg.imatrix.calibration else None
    entry = ManifestEntry(
        kind="variant", variant=v.name, file=p.file_name, planned=True, sha256=None,
        size=p.tensor_bytes, bpw=round(p.bits_per_weight, 4), n_params=p.n_params, input_key=key,
        recipe=p.spec.describe(), type=v.type, output=p.spec.output_type,
        embeddings=p.spec.embeddings_type, description=v.description, engine=Engine.from_json(engine_version()),
        source=replace(source.record(), sha256=source.sha256 or None),
        imatrix=(ImatrixUse(dataset=p.imatrix.dataset if p.imatrix else calibration,
                            chunks=p.imatrix.chunks if p.imatrix else cfg.imatrix.chunks) if uses else None),
        tensor_types=p.report.type_counts, fallbacks=p.report.fallbacks,
        file_facts=FileFacts(output=out or emb, embeddings=emb, tied=out is None and emb is not None,
                             tensor_types=p.report.type_counts),
    )
    shapes = {t.name: t.shape for t in source.info.tensors}
    return _with_planned_shards(cfg, entry, [tensor_nbytes(shapes[t.name], t.type) for t in p.report.tensors])


def _with_planned_shards(cfg: Config, entry: ManifestEntry, tensor_sizes: list[int]) -> ManifestEntry:
    """``entry`` with the shards publish will split it into (``target.max_shard_size``), when it will be split
    and is not yet; their sizes as the split would make them, no sha256 yet."""
    limit = parse_size(cfg.target.max_shard_size) if cfg.target.max_shard_size is not None else None
    size = entry.size or 0
    if limit is None or size <= limit or (entry.shards is not None and entry.shards.max_size == limit):
        return entry
    sizes = planned_shard_sizes(tensor_sizes, size - sum(tensor_sizes), limit)
    assert entry.file is not None
    names = shard_names(entry.file, len(sizes))
    return replace(entry, shards=Shards(files=[Shard(file=n, size=s) for n, s in zip(names, sizes)]))


def _local_entry(cfg: Config, work: WorkDir, fname: str, entry: ManifestEntry) -> ManifestEntry:
    """A built file's record, with the shards publish will split it into when that has not happened yet."""
    limit = parse_size(cfg.target.max_shard_size) if cfg.target.max_shard_size is not None else None
    if limit is None or (entry.size or 0) <= limit:
        return entry
    return _with_planned_shards(cfg, entry, [t.n_bytes for t in read_info(work.out / fname).tensors])


def _unplanned_entry(cfg: Config, v: VariantConfig) -> ManifestEntry:
    """A record of a variant that cannot be planned here: its name and type only."""
    return ManifestEntry(kind="variant", variant=v.name, file=cfg.file_name(v), planned=True, type=v.type,
                         description=v.description)


def _names(fname: str, entry: ManifestEntry) -> list[str]:
    return [s.file for s in entry.shard_files] or [fname]


class _Composer:
    """Collects each variant's record, result and change while the ladder is walked."""

    def __init__(self, cfg: Config, published: PublishedRepo) -> None:
        self.cfg, self.published = cfg, published
        self.records = published.records
        self.entries: dict[str, ManifestEntry] = {}
        self.results: dict[str, dict] = {}
        self.files: list[str] = []
        self.changes: list[Change] = []

    def published_entry(self, fname: str) -> ManifestEntry | None:
        if self.records is not None:
            return self.records.entry(fname)
        return None

    def was_published(self, fname: str) -> bool:
        if self.records is not None:
            return self.records.entry(fname) is not None
        return any(_stem(n) == fname.removesuffix(".gguf") for n in self.published.files if n.endswith(".gguf"))

    def add(self, v: VariantConfig, fname: str, entry: ManifestEntry, result: dict | None, status: str) -> None:
        self.entries[fname] = entry
        if result:
            self.results[fname] = result
        self.files += _names(fname, entry)
        self.changes.append(Change(v.name, fname, status))

    def status(self, fname: str, key: str | None) -> str:
        old = self.published_entry(fname)
        if old is not None and key and old.input_key == key:
            return "unchanged"
        return "rebuilt" if self.was_published(fname) else "added"

    def removed(self) -> None:
        ladder = {self.cfg.file_name(v).removesuffix(".gguf") for v in self.cfg.variants}
        if self.records is not None:
            entries = self.records.entries()
            gone = [(str((e.variant if (e := entries.get(f)) else None) or f), f) for f in self.records.variants
                    if f.removesuffix(".gguf") not in ladder]
        else:
            stems = sorted({_stem(n) for n in self.published.files if n.endswith(".gguf") and ".imatrix." not in n})
            gone = [(s, f"{s}.gguf") for s in stems if s not in ladder]
        self.changes += [Change(name, f, "removed") for name, f in gone]


def preview_card(cfg: Config, *, upstream: Path | None = None, threads: int | None = None) -> Preview:
    """The card this ladder would publish, from local builds, the published records and the plan."""
    published = read_published(cfg)
    work = WorkDir(cfg.workdir).prepare()
    nthreads = default_threads(cfg, threads)
    local = _local_entries(cfg, work)
    from hubbot.bench.run import load_results

    local_results = load_results(cfg)
    notes: list[str] = []
    todo = [v for v in cfg.variants if cfg.file_name(v) not in local]
    source = imatrix = imatrix_entry = None
    if todo:
        found = standin_source(cfg, work.cache, published)
        source = found.source
        if found.note:
            notes.append(found.note)
        if source is not None:
            assert source.info is not None
            check_rules(cfg, source.info)
            if any(v.uses_imatrix for v in todo) and cfg.has_imatrix_source:
                imatrix, imatrix_entry = _expected_imatrix(cfg, source, work, published.records, nthreads)
                if imatrix is None:
                    notes.append("the importance matrix will be computed anew, so every file quantized with it "
                                 "will be rebuilt")
    comp = _Composer(cfg, published)
    plans = []
    for v in cfg.variants:
        fname = cfg.file_name(v)
        if fname in local:
            entry = local[fname]
            old = comp.published_entry(fname)
            result = local_results.get(fname) or (comp.records.result(fname) if comp.records and old
                                                 and old.sha256 == entry.sha256 else None)
            comp.add(v, fname, _local_entry(cfg, work, fname, entry), result, comp.status(fname, entry.input_key))
            continue
        if source is None:
            old = comp.published_entry(fname)
            if old is not None and _on_hub(published, fname, old):
                # No plan to compare with: show what is published, and say it was not checked.
                assert comp.records is not None
                comp.add(v, fname, replace(old, published=True), comp.records.result(fname), "unchecked")
            else:
                comp.add(v, fname, _unplanned_entry(cfg, v), None, "rebuilt" if comp.was_published(fname) else "added")
            continue
        p = plan_variant(cfg, v, source, work, imatrix, nthreads, dry_run=True)
        plans.append(p)
        known = bool(source.sha256) and (imatrix is not None or not (v.uses_imatrix and cfg.has_imatrix_source))
        status = comp.status(fname, p.input_key if known else None)
        old = comp.published_entry(fname)
        names = _on_hub(published, fname, old) if old else None
        if status == "unchanged" and old is not None and names:
            assert comp.records is not None
            comp.add(v, fname, replace(old, published=True), comp.records.result(fname), status)
        else:
            comp.add(v, fname, _planned_entry(cfg, v, p, source, p.input_key if known else None), None,
                     "rebuilt" if status == "unchanged" else status)
    if source is not None:
        check_shard_size(cfg, source, plans)
    comp.removed()
    if imatrix_entry is not None:
        assert imatrix_entry.file is not None
        comp.entries[imatrix_entry.file] = imatrix_entry
        comp.files.append(imatrix_entry.file)
    data = gather(cfg, files=comp.files, upstream=load_upstream(cfg, path=upstream), results=comp.results,
                  manifest=comp.entries)
    return Preview(card=render(data), repo=cfg.target.repo, published=published.exists, changes=comp.changes,
                   notes=notes)
