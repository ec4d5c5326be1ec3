"""Measuring built variants: perplexity, KL divergence against the reference, speed, size.

The contract other stages use:

- ``run_bench(cfg, only=None, chunks=None, threads=None, force=False, speed=None) -> list[dict]``
  measures the variants whose files are in the manifest (it builds nothing) and returns one
  result per variant (plus ``"status"``: ``"measured"`` or ``"reused"``);
- ``load_results(cfg) -> dict[str, dict]``: the stored result of each built variant, keyed by
  output file name.

Each result lives in ``<workdir>/results/bench/<output sha256>.json``::

    {"file", "variant", "sha256", "size", "bpw",
     "perplexity": {"ppl", "stderr", "chunks", "ctx", "tokens"},
     "kld": {"reference", "mean", "median", "p99", "max", "same_top", "dp_mean", "dp_rms"} | null,
     "speed": {"pp", "tg", "threads", "repetitions", "pp_tokens", "tg_tokens"} | null,
     "settings": {"quality": {...}, "speed": {...} | null}, "engine": {...}, "text": {"name", "sha256"}}

``perplexity.tokens`` counts the scored tokens; ``same_top`` is a fraction (0..1); ``dp_*`` are
changes in the probability of the correct token (0..1 scale). The quality part (perplexity and
KLD) is reused while the file, the text, ctx/chunks, the reference file and the engine are
unchanged; the speed part while the file, threads, repetitions and engine are unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubbot.bench.quality import chunk_count, evaluate
from hubbot.bench.reference import ReferenceStore
from hubbot.bench.results import BenchResult
from hubbot.bench.speed import PP_TOKENS, TG_TOKENS, measure_speed
from hubbot.bench.text import EvalText, load_eval_text
from hubbot.config import Config, VariantConfig
from hubbot.config.recipes import FLOAT_TYPES
from hubbot.errors import BenchError
from hubbot.llama.session import LlamaModel
from hubbot.llama.version import engine_version
from hubbot.manifest import ManifestEntry
from hubbot.progress import bar
from hubbot.workdir import WorkDir, canonical_json, sha256_file, sha256_text, write_json_atomic

log = logging.getLogger(__name__)

METHOD = 1  # bump when a change to the measurement changes the figures


@dataclass
class Target:
    """A file to measure (or the reference to compare with)."""

    name: str
    file: str
    path: Path
    sha256: str
    size: int = 0
    n_params: int = 0


def results_dir(work: WorkDir) -> Path:
    return work.results / "bench"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_results(cfg: Config) -> dict[str, dict]:
    """Stored results of the built variants (ladder order), keyed by output file name."""
    work = WorkDir(cfg.workdir)
    manifest = work.manifest
    out: dict[str, dict] = {}
    for v in cfg.variants:
        entry = manifest.get(cfg.file_name(v))
        if entry and (data := _read_json(results_dir(work) / f"{entry.sha256}.json")):
            out[cfg.file_name(v)] = data
    return out


def _current_sha(path: Path, entry: ManifestEntry) -> str:
    """The manifest's sha256, or a fresh one when the file changed since it was built."""
    if entry.is_fresh(path) and entry.sha256:
        return entry.sha256
    log.warning("%s changed since it was built; measuring the file as it is now", path.name)
    return sha256_file(path)


def _first_shard(work: WorkDir, entry: ManifestEntry) -> Path | None:
    """The first shard of a file this machine holds only as shards (a staged float file), when all are here."""
    shards = [work.out / s.file for s in entry.shard_files]
    return shards[0] if shards and all(p.is_file() for p in shards) else None


def _built(cfg: Config, work: WorkDir, v: VariantConfig, role: str = "variant") -> Target:
    fname = cfg.file_name(v)
    entry = work.manifest.get(fname)
    path = work.out / fname
    if entry and not path.is_file() and (first := _first_shard(work, entry)):
        # llama.cpp opens a split model from its first shard; each shard's sha256 was checked when
        # it was fetched, so the whole file's recorded sha256 stands.
        assert entry.sha256 is not None
        return Target(v.name, fname, first, entry.sha256, entry.size or 0, entry.n_params or 0)
    if not entry or not path.is_file():
        raise BenchError(f"{role} {v.name!r} is not built yet ({fname}); run `hubbot build --only {v.name}` first")
    return Target(v.name, fname, path, _current_sha(path, entry), path.stat().st_size, entry.n_params or 0)


def reference_target(cfg: Config, work: WorkDir) -> Target:
    """benchmark.reference, else the first BF16/F16/F32 variant, else the source GGUF."""
    name = cfg.benchmark.reference or next((v.name for v in cfg.variants if v.type in FLOAT_TYPES), None)
    if name:
        return _built(cfg, work, cfg.variant(name), "reference variant")
    from hubbot.source.resolve import resolve_source

    src = resolve_source(cfg, work.cache)
    return Target("source", src.path.name, src.path, src.sha256)


def _threads(cfg: Config, threads: int | None) -> int:
    return threads or cfg.benchmark.threads or cfg.build.threads or os.cpu_count() or 1


def _quality_settings(cfg: Config, text: EvalText, ref: Target, chunks: int | None) -> dict[str, Any]:
    b = cfg.benchmark
    return {"method": METHOD, "ctx": b.ctx, "chunks": chunks if chunks is not None else b.chunks,
            "batch_chunks": b.batch_chunks, "text_sha256": text.sha256,
            "reference": ref.name, "reference_file": ref.file, "reference_sha256": ref.sha256}


class _Session:
    """One bench run: the text, the reference store and the settings shared by every variant."""

    def __init__(self, cfg: Config, text: EvalText, ref: Target, qset: dict, store: ReferenceStore,
                 threads: int) -> None:
        self.cfg, self.text, self.ref, self.qset, self.store, self.threads = cfg, text, ref, qset, store, threads

    def chunks(self, n_tokens: int) -> int:
        return chunk_count(n_tokens, self.cfg.benchmark.ctx, self.qset["chunks"])

    def reference_ready(self) -> bool:
        info = self.store.info
        return bool(info) and info["chunks"] >= self.chunks(info["n_tokens"])

    def quality(self, model: LlamaModel, name: str, is_reference: bool) -> tuple[dict, dict | None]:
        """(perplexity, kld) of a loaded model; the reference's pass also writes the reference store."""
        b = self.cfg.benchmark
        tokens = model.tokenize(self.text.data)
        n_chunks = self.chunks(len(tokens))
        tokens_sha = sha256_text(tokens.tobytes())
        kw: dict[str, Any] = {}
        if is_reference and not self.store.usable(n_chunks, tokens_sha, model.n_vocab):
            kw = {"write_reference": self.store.folder,
                  "reference_info": {"reference": self.ref.file, "reference_sha256": self.ref.sha256,
                                     "text_sha256": self.text.sha256, "tokens_sha256": tokens_sha,
                                     "n_tokens": len(tokens)}}
        elif self.store.usable(n_chunks, tokens_sha, model.n_vocab):
            kw = {"reference": self.store.open()}
        else:
            log.warning("%s: no reference distributions that match its vocabulary and tokens; KLD is not measured",
                        name)
        with bar(n_chunks * b.ctx, f"{'reference' if is_reference else 'perplexity'} {name}", unit="tok") as pbar:
            acc = evaluate(model, tokens, ctx=b.ctx, n_chunks=n_chunks, n_seq=b.batch_chunks,
                           threads=self.threads, progress=pbar, **kw)
        return acc.perplexity(n_chunks, b.ctx), (acc.divergence(self.ref.name) if kw else None)

    def ensure_reference(self) -> None:
        """Compute and store the reference distributions unless they are stored already."""
        if self.reference_ready():
            return
        log.info("computing the reference distributions from %s", self.ref.file)
        with LlamaModel(self.ref.path, self.cfg.benchmark.gpu_layers) as model:
            self.quality(model, self.ref.name, is_reference=True)


def _store_for(work: WorkDir, qset: dict) -> ReferenceStore:
    """Where the reference distributions for these settings live (keyed by reference, text, settings, engine)."""
    keyed = {k: qset[k] for k in ("method", "ctx", "batch_chunks", "text_sha256", "reference_sha256")}
    key = sha256_text(canonical_json({**keyed, "engine": engine_version()}))
    return ReferenceStore(work.cache / "bench-reference" / key[:32])


def compute_reference(cfg: Config, chunks: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """Only the reference distributions, stored in the cache (a release's imatrix job computes them
    once and hands the folder on, so no build job loads the float reference model)."""
    work = WorkDir(cfg.workdir).prepare()
    text = load_eval_text(cfg)
    ref = reference_target(cfg, work)
    qset = _quality_settings(cfg, text, ref, chunks)
    store = _store_for(work, qset)
    _Session(cfg, text, ref, qset, store, _threads(cfg, threads)).ensure_reference()
    size = sum(p.stat().st_size for p in store.folder.rglob("*") if p.is_file())
    return {"reference": ref.name, "file": ref.file, "sha256": ref.sha256, "folder": str(store.folder), "size": size}


def run_bench(cfg: Config, only: Iterable[str] | None = None, chunks: int | None = None,
              threads: int | None = None, force: bool = False, speed: bool | None = None,
              require_reference: bool = False) -> list[dict]:
    """Measure the selected built variants (all by default); results of unchanged files are reused.

    ``require_reference``: the reference distributions must be stored already (a release's build
    job receives them as an artifact); a BenchError instead of computing them from the reference."""
    if chunks is not None and chunks < 2:
        raise BenchError("--chunks must be at least 2 (perplexity needs two chunks of benchmark.ctx tokens)")
    work = WorkDir(cfg.workdir).prepare()
    variants = [cfg.variant(n) for n in only] if only else list(cfg.variants)
    targets = [(v, _built(cfg, work, v)) for v in variants]
    want_speed = cfg.benchmark.speed if speed is None else speed
    nthreads = _threads(cfg, threads)
    engine = engine_version()
    text = load_eval_text(cfg)
    ref = reference_target(cfg, work)
    qset = _quality_settings(cfg, text, ref, chunks)
    sset = {"threads": nthreads, "repetitions": cfg.benchmark.repetitions,
            "pp_tokens": PP_TOKENS, "tg_tokens": TG_TOKENS}
    session = _Session(cfg, text, ref, qset, _store_for(work, qset), nthreads)

    plans = []
    for v, t in targets:
        old = _read_json(results_dir(work) / f"{t.sha256}.json") or {}
        settings = old.get("settings") or {}
        fresh = old.get("engine") == engine and not force
        quality_ok = fresh and settings.get("quality") == qset and bool(old.get("perplexity"))
        speed_ok = fresh and settings.get("speed") == sset and bool(old.get("speed"))
        plans.append((v, t, old, not quality_ok, want_speed and not speed_ok, speed_ok))
    # The reference is measured first: its pass writes the distributions the others are compared with.
    plans.sort(key=lambda p: not (p[3] and p[1].sha256 == ref.sha256))
    if require_reference and any(p[3] for p in plans) and not session.reference_ready():
        raise BenchError(f"the reference distributions of {ref.file} are not in {session.store.folder}: this job "
                         "expects them from the imatrix job's bench-reference artifact; rerun that job (or run "
                         "`hubbot bench --reference-only`) and download the artifact into that folder")
    if any(p[3] for p in plans) and not (plans[0][3] and plans[0][1].sha256 == ref.sha256):
        session.ensure_reference()

    results = []
    for v, t, old, need_q, need_s, speed_ok in plans:
        if not need_q and not need_s:
            log.info("%s: results are up to date", t.file)
            results.append({**old, "status": "reused"})
            continue
        ppl, kld = old.get("perplexity"), old.get("kld")
        spd = old.get("speed") if speed_ok else None
        with LlamaModel(t.path, cfg.benchmark.gpu_layers) as model:
            if need_q:
                log.info("measuring perplexity and KLD of %s", t.file)
                ppl, kld = session.quality(model, v.name, is_reference=t.sha256 == ref.sha256)
            if need_s:
                log.info("measuring the speed of %s (%d threads)", t.file, nthreads)
                total = cfg.benchmark.repetitions * (PP_TOKENS + TG_TOKENS)
                with bar(total, f"speed {v.name}", unit="tok") as pbar:
                    spd = measure_speed(model, nthreads, cfg.benchmark.repetitions, progress=pbar)
        result = BenchResult.from_json({
            "file": t.file, "variant": v.name, "sha256": t.sha256, "size": t.size,
            "bpw": round(8.0 * t.size / t.n_params, 4) if t.n_params else None,
            "perplexity": ppl, "kld": kld, "speed": spd,
            "settings": {"quality": qset, "speed": sset if spd else None},
            "engine": engine, "text": text.describe(),
        }).to_json()
        write_json_atomic(results_dir(work) / f"{t.sha256}.json", result)
        results.append({**result, "status": "measured"})
    order = {v.name: i for i, (v, _) in enumerate(targets)}
    return sorted(results, key=lambda r: order[r["variant"]])
