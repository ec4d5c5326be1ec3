"""Building the ladder: one GGUF per variant, skipping what is already up to date."""

from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from hubbot.budget.planner import AutoPlanner
from hubbot.build.limits import check_shard_size, may_exceed_shard_limit
from hubbot.build.spec import VariantPlan, check_auto_types, check_rules, plan_variant
from hubbot.config import Config, VariantConfig
from hubbot.errors import BuildError, ConfigError, ImatrixError
from hubbot.imatrix.ref import ImatrixRef
from hubbot.llama.quantize import quantize
from hubbot.llama.version import engine_version
from hubbot.manifest import AutoRecord, Engine, ImatrixUse, ManifestEntry
from hubbot.progress import bar
from hubbot.source.resolve import ResolvedSource, resolve_source
from hubbot.workdir import WorkDir, check_free_space, sha256_file, temp_path

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    name: str
    file: str
    status: str  # "built" or "unchanged"
    entry: ManifestEntry


def default_threads(cfg: Config, threads: int | None) -> int:
    return threads or cfg.build.threads or os.cpu_count() or 1


def select_variants(cfg: Config, only: Iterable[str] | None) -> list[VariantConfig]:
    if not only:
        return list(cfg.variants)
    return [cfg.variant(name) for name in only]


def needs_imatrix(variants: list[VariantConfig], cfg: Config) -> bool:
    """Whether this run should compute/load an imatrix: some variant needs it or can use the configured one."""
    return any(v.needs_imatrix or (v.uses_imatrix and cfg.has_imatrix_source) for v in variants)


def prepare(cfg: Config, only: Iterable[str] | None = None) -> tuple[WorkDir, ResolvedSource, list[VariantConfig]]:
    """Work directory, resolved source and the selected variants, with the model-dependent checks done."""
    variants = select_variants(cfg, only)
    work = WorkDir(cfg.workdir).prepare()
    source = resolve_source(cfg, work.cache)
    assert source.info is not None
    check_rules(cfg, source.info)
    return work, source, variants


def load_imatrix(cfg: Config, source: ResolvedSource, work: WorkDir, variants: list[VariantConfig],
                 threads: int, compute: bool = True) -> ImatrixRef | None:
    if not needs_imatrix(variants, cfg):
        return None
    from hubbot.imatrix.ensure import ensure_imatrix

    ref = ensure_imatrix(cfg, source, work, threads=threads, compute=compute)
    if ref is None and compute:
        missing = [v.name for v in variants if v.needs_imatrix]
        if missing:
            raise ImatrixError(f"variants {', '.join(missing)} need an importance matrix; set imatrix.calibration or imatrix.file")
    return ref


def _missing_artifact(what: str, artifact: str, folder: Path) -> str:
    return (f"{what} is not in {folder}: this job expects it from the imatrix job's `{artifact}` artifact; "
            f"rerun that job, or download the artifact into that folder")


def auto_planner(cfg: Config, source: ResolvedSource, work: WorkDir, imatrix: ImatrixRef | None,
                 variants: list[VariantConfig], threads: int, compute: bool) -> AutoPlanner | None:
    """The budget planner shared by this run's recipe: auto variants (None when there are none)."""
    if not any(v.is_auto for v in variants):
        return None
    return AutoPlanner(cfg, source, work, imatrix, threads, compute)


def manifest_entry(p: VariantPlan, source: ResolvedSource, sha: str, st: os.stat_result, report) -> ManifestEntry:
    return ManifestEntry(
        kind="variant", variant=p.variant.name, file=p.file_name, sha256=sha, size=st.st_size,
        mtime_ns=st.st_mtime_ns, input_key=p.input_key, recipe=p.spec.describe(),
        type=p.variant.type, output=p.spec.output_type, embeddings=p.spec.embeddings_type,
        description=p.variant.description, engine=Engine.from_json(engine_version()), source=source.record(),
        imatrix=(ImatrixUse(sha256=p.imatrix.sha256, file=p.imatrix.path.name, dataset=p.imatrix.dataset,
                            chunks=p.imatrix.chunks) if p.imatrix else None),
        tensor_types=report.type_counts, fallbacks=report.fallbacks,
        n_params=p.n_params,
        bpw=round(8.0 * st.st_size / max(1, p.n_params), 4),
        seconds=round(report.seconds, 3), peak_rss=report.peak_rss,
        auto=AutoRecord.from_json(p.auto.to_json()) if p.auto else None,
    )


def quantize_variant(p: VariantPlan, source: ResolvedSource, work: WorkDir) -> tuple[Path, Any]:
    """Quantize one variant into a temporary file next to its final name; (temp path, report)."""
    final = work.output(p.file_name)
    # The output is at most the source's size for every type but F32, which doubles 16-bit weights.
    needed = source.path.stat().st_size * (2 if p.variant.type == "F32" else 1)
    check_free_space(work.out, needed, f"building {p.file_name}")
    tmp = temp_path(final)
    try:
        with bar(None, f"quantize {p.variant.name}", unit="tensor") as pbar:
            report = quantize(source.path, tmp, p.spec, p.imatrix.values if p.imatrix else None, progress=pbar)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, report


def finish_variant(p: VariantPlan, source: ResolvedSource, work: WorkDir, tmp: Path, report) -> ManifestEntry:
    """Hash the finished temporary file, move it into place and return its manifest entry."""
    final = work.output(p.file_name)
    try:
        with bar(tmp.stat().st_size, f"sha256 {p.file_name}", unit="B") as hbar:
            sha = sha256_file(tmp, hbar)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest_entry(p, source, sha, final.stat(), report)


def build_variant(cfg: Config, p: VariantPlan, source: ResolvedSource, work: WorkDir) -> ManifestEntry:
    """Quantize one variant into ``out/`` atomically and record it in the manifest."""
    tmp, report = quantize_variant(p, source, work)
    entry = finish_variant(p, source, work, tmp, report)
    work.manifest.put(p.file_name, entry)
    return entry


def build(cfg: Config, only: Iterable[str] | None = None, threads: int | None = None,
          force: bool = False, require_artifacts: bool = False) -> list[BuildResult]:
    """Build the selected variants (all by default); unchanged outputs are skipped.

    ``require_artifacts``: the importance matrix and recipe: auto's sensitivity must be cached
    already (a release's build job receives them from the imatrix job); a BuildError names the
    missing artifact instead of computing it here, which at 27B would take hours.
    """
    nthreads = default_threads(cfg, threads)
    work, source, variants = prepare(cfg, only)
    if may_exceed_shard_limit(cfg, source):
        # Before the imatrix and the first file: a variant that cannot be sharded fails now.
        check_shard_size(cfg, source, [plan_variant(cfg, v, source, work, None, nthreads) for v in variants])
    imatrix = load_imatrix(cfg, source, work, variants, nthreads, compute=not require_artifacts)
    if require_artifacts and imatrix is None and needs_imatrix(variants, cfg):
        raise BuildError(_missing_artifact("the importance matrix", "imatrix", work.cache / "imatrix"))
    planner = auto_planner(cfg, source, work, imatrix, variants, nthreads, compute=not require_artifacts)
    results: list[BuildResult] = []
    manifest = work.manifest
    # Hashing a finished file (a minute for a 54 GB BF16) overlaps the next variant's
    # quantization; entries reach the manifest in ladder order as each hash completes.
    pending: list[tuple[str, str, Future]] = []

    def settle() -> None:
        while pending:
            name, file_name, fut = pending.pop(0)
            entry = fut.result()
            manifest.put(file_name, entry)
            results.append(BuildResult(name, file_name, "built", entry))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubbot-hash") as hasher:
        try:
            for v in variants:
                p = plan_variant(cfg, v, source, work, imatrix, nthreads, dry_run=False, planner=planner)
                if v.needs_imatrix and p.imatrix is None:
                    raise ConfigError(f"variant {v.name!r} needs an importance matrix but imatrix is off for it")
                if v.is_auto and p.auto is None:  # only when require_artifacts kept it from measuring
                    raise BuildError(_missing_artifact(f"recipe: auto's sensitivity (variant {v.name!r})",
                                                       "sensitivity", work.cache / "budget"))
                if p.up_to_date and not force:
                    settle()
                    log.info("%s is up to date", p.file_name)
                    results.append(BuildResult(v.name, p.file_name, "unchanged", manifest.get(p.file_name) or ManifestEntry()))
                    continue
                log.info("building %s (%s)", p.file_name, v.type)
                tmp, report = quantize_variant(p, source, work)
                if p.auto is not None:
                    try:
                        check_auto_types(v, p.auto, report)
                    except BaseException:
                        tmp.unlink(missing_ok=True)
                        raise
                settle()  # at most one file is hashing at a time: keep the disk reads sequential
                pending.append((v.name, p.file_name, hasher.submit(finish_variant, p, source, work, tmp, report)))
        except BaseException:
            # Files already quantized are finished and recorded even when a later variant fails;
            # the first failure is the one reported.
            with contextlib.suppress(Exception):
                settle()
            raise
        settle()
    return results
