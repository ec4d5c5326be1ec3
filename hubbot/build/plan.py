"""Plan and inspect results as data (for --json) and as compact text tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from hubbot.build.limits import check_shard_size
from hubbot.build.resource_plan import (
    check_job,
    load_plan_file,
    render_resources,
    resource_plan,
    source_facts,
    variant_facts,
)
from hubbot.build.resources import ModelShape, VariantFacts
from hubbot.build.run import auto_planner, default_threads, load_imatrix, needs_imatrix, prepare
from hubbot.build.spec import VariantPlan, plan_variant
from hubbot.config import Config
from hubbot.config.recipes import ROLES
from hubbot.source.resolve import source_plan, source_plan_lines
from hubbot.workdir import WorkDir, human_bytes


def plan_project(cfg: Config, only: Iterable[str] | None = None, threads: int | None = None,
                 dry_run: bool = True, reference: str = "artifact", measure: bool = False) -> dict[str, Any]:
    """Everything ``hubbot plan`` shows, as JSON-ready data (also the CI matrix source)."""
    nthreads = default_threads(cfg, threads)
    # What the source needs (downloads, conversion), worked out before prepare() fetches it.
    resolution = source_plan(cfg, WorkDir(cfg.workdir).cache)
    work, source, variants = prepare(cfg, only)
    # measure: compute the imatrix and the sensitivity that recipe: auto allocations need.
    imatrix = load_imatrix(cfg, source, work, variants, nthreads, compute=measure)
    planner = auto_planner(cfg, source, work, imatrix, variants, nthreads, compute=measure)
    # One dry run at a time: starting forkserver children from several threads at once loses some
    # of them under load (CPython issue 140867: exit code 255).
    plans = [plan_variant(cfg, v, source, work, imatrix, nthreads, dry_run=dry_run, compare_standard=dry_run,
                          planner=planner) for v in variants]
    check_shard_size(cfg, source, plans)
    resources, shards = None, [None] * len(plans)
    if dry_run:  # sizes and types come from the dry run: without it there is nothing to add up
        assert source.info is not None
        shape = ModelShape.from_info(source.info, source.path.stat().st_size)
        facts = [_facts(cfg, p, shape) for p in plans]
        shards = [f.shards or None for f in facts]
        resources = resource_plan(cfg, shape, facts, source_facts(cfg, source.kind, source.origin, resolution, work.cache),
                                  nthreads, imatrix=needs_imatrix(variants, cfg), reference=reference)
    return {
        "config": str(cfg.path), "target": cfg.target.repo, "workdir": str(work.root),
        "source": dict(source.describe(), resolution=resolution),
        "imatrix": ({"file": imatrix.path.name, "sha256": imatrix.sha256} if imatrix else None),
        "variants": [dict(p.to_json(), blocks=p.block_table(), outside_blocks=p.outside_blocks(), shards=sh)
                     for p, sh in zip(plans, shards)],
        "matrix": {"include": [{"variant": p.variant.name, "file": p.file_name} for p in plans]},
        "resources": resources,
    }


def _facts(cfg: Config, p: VariantPlan, shape: ModelShape) -> VariantFacts:
    v = p.variant
    uses = v.needs_imatrix or (v.uses_imatrix and cfg.has_imatrix_source)
    types = {t.name: t.type for t in p.report.tensors} if p.report else p.estimate_types
    facts = variant_facts(cfg, v.name, p.file_name, v.type, p.tensor_bytes or p.budget_bytes or 0, uses, types, shape)
    facts.auto = v.is_auto
    return facts


def _block_rows(blocks: dict[str, dict[int, str]]) -> list[str]:
    """One line per role: the type of each block, runs folded ('Q5_0 x4, IQ4_XS x2')."""
    rows = []
    for role in [r for r in ROLES if r in blocks] + sorted(set(blocks) - set(ROLES)):
        types = [blocks[role][b] for b in sorted(blocks[role])]
        if role not in ROLES and all(t in ("F32", "F16", "BF16") for t in types):
            continue  # norms and biases stay float in every variant: not worth a line
        runs: list[list] = []
        for t in types:
            if runs and runs[-1][0] == t:
                runs[-1][1] += 1
            else:
                runs.append([t, 1])
        rows.append(f"      {role:<12} " + " ".join(f"{t}x{n}" if n > 1 else t for t, n in runs))
    return rows


def _auto_lines(v: dict[str, Any]) -> list[str]:
    a = v["auto"]
    used = 100.0 * a["size"] / a["budget"]
    out = [f"    budget {a['budget_text']}: {human_bytes(a['budget'])}, planned {human_bytes(a['size'])} ({used:.1f}% of it)"]
    std = a.get("standard_predicted_kld")
    out.append(f"    predicted mean KLD {a['predicted_kld']:.4g}" + (f" (standard {v['type']}: {std:.4g})" if std else ""))
    return out


def render_plan(data: dict[str, Any]) -> str:
    src = data["source"]
    lines = [f"source: {src['origin']} ({src['architecture']}, {src['block_count']} blocks, {human_bytes(src['size'])}, sha256 {src['sha256'][:12]})",
             *source_plan_lines(src.get("resolution")),
             f"target: {data['target']}", ""]
    for v in data["variants"]:
        status = "up to date" if v["up_to_date"] else "to build"
        size = human_bytes(v["size"]) if v["size"] else f"<={human_bytes(v['budget'])}" if v.get("budget") else "?"
        lines.append(f"{v['name']:<16} {v['file']:<44} {v['type']:<8} {size:>10}  {v['bpw']:5.2f} bpw  {status}")
        if v["tensor_types"]:
            extra = f"; {v['fallbacks']} shape fallbacks" if v["fallbacks"] else ""
            lines.append("    types: " + ", ".join(f"{k} {n}" for k, n in v["tensor_types"].items()) + extra)
        if v.get("standard_size"):
            delta = v["size"] - v["standard_size"]
            pct = 100.0 * delta / v["standard_size"]
            lines.append(f"    vs standard {v['type']}: {human_bytes(v['standard_size'])} -> {size} ({pct:+.1f}%)")
        if v.get("auto"):
            lines.extend(_auto_lines(v))
        for note in v.get("notes") or []:
            lines.append(f"    note: {note}")
        if v["blocks"] and (v.get("standard_size") or v["name"].startswith("dynamic")):
            lines.extend(_block_rows(v["blocks"]))
            if v.get("auto"):  # the token embedding / output is part of an auto file's choice
                lines.extend(f"      {name:<12} {t}" for name, t in (v.get("outside_blocks") or {}).items())
        if v.get("shards"):
            parts = ", ".join(f"{s['file'][-19:-5]} {human_bytes(s['bytes'])}" for s in v["shards"])
            lines.append(f"    shards (target.max_shard_size; the Hub takes files up to 50 GB): {parts}")
    if data.get("resources"):
        lines.extend(render_resources(data["resources"]))
    return "\n".join(lines)


def check_release_job(cfg: Config, job: str, only: Iterable[str], plan_file: Path | None = None,
                      threads: int | None = None) -> dict[str, Any]:
    """``hubbot plan --check-job``: RunnerTooSmallError unless this machine can run ``job``.

    The needs come from ``plan_file`` (an earlier ``hubbot plan --json``), else from a plan made now
    when the source is a local or packaged GGUF (its header is already here), else (Hub or
    safetensors sources) only the convert job can be sized, from the listing and the headers.
    """
    rows = None
    if plan_file is not None:
        rows = load_plan_file(cfg, plan_file)
    elif not cfg.source.repo and not (cfg.source.path and cfg.resolve_path(cfg.source.path).is_dir()):
        rows = plan_project(cfg, threads=threads)["resources"]["jobs"]
    return check_job(cfg, job, list(only), rows, default_threads(cfg, threads))
