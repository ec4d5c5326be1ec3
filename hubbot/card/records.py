"""Other stages' records read into the card's typed input: manifest entries, bench results, GGUF
headers and the config, gathered once into a ``CardInput``.

Manifest entries and bench results are still plain dicts written by other stages: every ``.get``
over them lives here, and everything after ``gather`` reads typed values.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path

from hubbot.bench.results import BenchResult
from hubbot.card.auto import auto_summary
from hubbot.card.inputs import (
    BenchSettings,
    CardInput,
    CardSettings,
    Engine,
    Fallback,
    FileRef,
    ImatrixFile,
    ImatrixUse,
    LayerRule,
    Measurement,
    MissingVariant,
    SourceFacts,
    TypeCount,
    VariantRow,
)
from hubbot.card.upstream import UpstreamCard, load_upstream
from hubbot.config import Config, VariantConfig
from hubbot.config.recipes import FILE_TYPES, TENSOR_TYPES
from hubbot.gguf_io.info import SHARD_RE, open_reader
from hubbot.manifest import Engine as EngineRecord
from hubbot.manifest import FileFacts, ManifestEntry, SourceRecord
from hubbot.manifest import ImatrixUse as ImatrixUseRecord
from hubbot.workdir import WorkDir

# Quant labels the Hub and llama.cpp recognise in file names (longest first so Q4_K_M beats Q4_K).
_LABELS = sorted({*FILE_TYPES, *TENSOR_TYPES}, key=len, reverse=True)
# How a block selector (config/recipes.py) is shaped; the templates put each shape into words.
_SPANS = (("edges", "edges "), ("edges", "first and last "), ("first", "first "), ("last", "last "),
          ("middle", "middle "))


def quant_labels(file_name: str) -> list[str]:
    """The quant labels in a file name, e.g. ['BF16', 'Q8_0'] for 'x-bf16-q8_0.gguf'."""
    stem = file_name.removesuffix(".gguf").upper()
    found = []
    for part in re.split(r"[-.]", stem):
        if part in _LABELS and part not in found:
            found.append(part)
    return found


def read_file_facts(path: Path) -> FileFacts | None:
    """Output/embedding types, tying and tensor-type counts read from a GGUF header; None when unreadable.

    The file is the truth: the build report can disagree with it (e.g. for tensors whose type
    an override changed), and the card describes what users download. They are also what
    `hubbot ci export` stores as a manifest entry's ``file_facts``.
    """
    with contextlib.suppress(Exception):
        reader = open_reader(path)
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        counts: dict[str, int] = {}
        for name in types.values():
            counts[name] = counts.get(name, 0) + 1
        emb = types.get("token_embd.weight")
        out = types.get("output.weight")
        return FileFacts(output=out or emb, embeddings=emb, tied=out is None and emb is not None, tensor_types=counts)
    return None


def layer_rule(blocks: str, roles: Iterable[str], type_: str) -> LayerRule:
    s = " ".join(blocks.lower().split())
    if s == "all":
        span, amount = "all", ""
    else:
        span, amount = next(((kind, s[len(prefix):]) for kind, prefix in _SPANS if s.startswith(prefix)),
                            ("depth" if "%" in s else "indices", s))
    return LayerRule(blocks=blocks, span=span, amount=amount, roles=list(roles), type=type_)


def _published_files(entry: ManifestEntry, files: set[str] | None, fname: str) -> list[FileRef] | None:
    """The published files of one variant: the whole file, its shards, or None when not published."""
    if files is None or fname in files:
        return [FileRef(fname, entry.size, entry.sha256)]
    named = [n for n in files if (m := SHARD_RE.match(n)) and m.group("stem") == fname.removesuffix(".gguf")]
    if not named:
        return None
    shards = {s.file: s for s in entry.shard_files}
    return [FileRef(n, s.size if (s := shards.get(n)) else None, s.sha256 if s else None) for n in sorted(named)]


def _measurement(result: BenchResult | None, reference_file: str | None, fname: str) -> Measurement | None:
    if result is None or result.perplexity is None:
        return None
    ppl, kld, spd = result.perplexity, result.kld, result.speed
    return Measurement(ppl=ppl.ppl, ppl_stderr=ppl.stderr, kld_mean=kld.mean if kld else None,
                       kld_p99=kld.p99 if kld else None, same_top=kld.same_top if kld else None,
                       pp=spd.pp if spd else None, tg=spd.tg if spd else None,
                       is_reference=reference_file == fname)


def _reference_file(results: dict[str, BenchResult]) -> str | None:
    return next((r.reference_file for r in results.values() if r.reference_file), None)


def _bench_settings(results: dict[str, BenchResult]) -> BenchSettings | None:
    measured = [r for r in results.values() if r.perplexity]
    if not measured:
        return None
    first = measured[0]
    ppl = first.perplexity
    speed = next((r.speed for r in measured if r.speed), None)
    return BenchSettings(
        text=first.text.get("name"),
        ctx=ppl.ctx, chunks=ppl.chunks, tokens=ppl.tokens,
        # The reference by variant name: its whole file may be published only as shards, or not at all.
        reference=first.quality_settings.get("reference") or (first.kld.reference if first.kld else None)
        or _reference_file(results),
        threads=speed.threads if speed else None, pp_tokens=speed.pp_tokens if speed else None,
        tg_tokens=speed.tg_tokens if speed else None)


def _counted(raw: dict[str, int] | None) -> list[tuple[str, int]]:
    """(key, count) pairs of a mapping, most frequent first, then by key."""
    return sorted((raw or {}).items(), key=lambda kv: (-kv[1], kv[0]))


def _fallbacks(raw: dict[str, str] | None) -> list[Fallback]:
    """Shape fallbacks grouped by change ('Q4_K->Q5_0': count)."""
    counts: dict[str, int] = {}
    for change in (raw or {}).values():
        counts[change] = counts.get(change, 0) + 1
    return [Fallback(k, n) for k, n in _counted(counts)]


def _engine(raw: EngineRecord | None) -> Engine | None:
    raw = raw or EngineRecord()
    engine = Engine(raw.ggml_commit, raw.llama_cpp_python, raw.ggml_version)
    return engine if engine.commit or engine.llama_cpp_python else None


def _source(raw: SourceRecord | None) -> SourceFacts | None:
    if raw is None or not raw.to_json():
        return None
    return SourceFacts(raw.repo, raw.revision, raw.origin, raw.sha256)


def _imatrix_use(raw: ImatrixUseRecord | None) -> ImatrixUse | None:
    return ImatrixUse(raw.dataset, raw.chunks) if raw is not None and raw.to_json() else None


def _row(v: VariantConfig, fname: str, entry: ManifestEntry, published: list[FileRef], facts: FileFacts | None,
         result: Measurement | None) -> VariantRow:
    return VariantRow(
        name=v.name, file=published[0].name, whole_file=fname, files=published,
        type=entry.type or v.type, size=entry.size, bpw=entry.bpw,
        n_params=entry.n_params, sha256=entry.sha256,
        output=facts.output if facts else entry.output,
        embeddings=facts.embeddings if facts else entry.embeddings,
        tied=bool(facts and facts.tied),
        description=entry.description or v.description,
        layers=[layer_rule(r.blocks, r.roles, r.type) for r in v.layers], recipe=v.recipe,
        fallbacks=_fallbacks(entry.fallbacks),
        tensor_types=[TypeCount(k, n) for k, n in _counted(facts.tensor_types if facts else entry.tensor_types)],
        labels=quant_labels(fname), result=result,
        engine=_engine(entry.engine), source=_source(entry.source),
        imatrix_use=_imatrix_use(entry.imatrix), planned=bool(entry.planned),
        auto=auto_summary(entry.auto))


def _rows(cfg: Config, manifest: dict[str, ManifestEntry], results: dict[str, BenchResult], files: set[str] | None,
          work: WorkDir) -> list[VariantRow]:
    """One row per published variant, in ladder order."""
    ref_file = _reference_file(results)
    rows = []
    for v in cfg.variants:
        fname = cfg.file_name(v)
        entry = manifest.get(fname)
        if not entry or not entry.is_variant:
            continue
        published = _published_files(entry, files, fname)
        if published is None:
            continue
        # A job matrix's card job has the files' records (`hubbot ci export` adds "file_facts"), not the files.
        path = work.out / fname
        # A preview's planned or published-only entries describe a file other than any local copy.
        local = not (entry.planned or entry.published)
        facts = read_file_facts(path) if local and path.is_file() else entry.file_facts
        rows.append(_row(v, fname, entry, published, facts, _measurement(results.get(fname), ref_file, fname)))
    return rows


def _imatrix_file(manifest: dict[str, ManifestEntry], files: set[str] | None) -> ImatrixFile | None:
    for name, e in manifest.items():
        if e.is_imatrix and (files is None or name in files):
            return ImatrixFile(name=name, size=e.size, sha256=e.sha256, dataset=e.dataset or e.calibration,
                               chunks=e.chunks, ctx=e.ctx, entries=e.entries)
    return None


def gather(cfg: Config, *, files: Iterable[str] | None = None, upstream: UpstreamCard | None = None,
           results: dict[str, dict | BenchResult] | None = None,
           manifest: dict[str, ManifestEntry] | None = None) -> CardInput:
    """The card's input for ``files`` (default: every output in the manifest).

    ``upstream`` defaults to ``load_upstream(cfg)``; ``results`` (bench results keyed by file
    name) default to what the bench stage stored; ``manifest`` (entries keyed by file name) to the
    work directory's. An entry with ``planned`` set describes a file not built yet (the preview).
    """
    work = WorkDir(cfg.workdir)
    if manifest is None:
        manifest = work.manifest.entries
    wanted = None if files is None else list(files)
    if results is None:
        # Imported here: the bench stage pulls in numpy, which a card given its results never needs.
        from hubbot.bench.run import load_results

        results = load_results(cfg)
    # Stored records (JSON, also what a job matrix hands over) become typed values here, once.
    typed = {name: r if isinstance(r, BenchResult) else BenchResult.from_json(r) for name, r in results.items()}
    if upstream is None:
        upstream = load_upstream(cfg)
    chosen = None if wanted is None else set(wanted)
    rows = _rows(cfg, manifest, typed, chosen, work)
    on_card = {r.name for r in rows}
    missing = [MissingVariant(v.name, cfg.file_name(v), v.type) for v in cfg.variants if v.name not in on_card]
    return CardInput(settings=CardSettings.from_config(cfg), rows=rows,
                     imatrix=_imatrix_file(manifest, chosen), bench=_bench_settings(typed),
                     upstream=upstream, published=list(manifest) if wanted is None else wanted, missing=missing)
