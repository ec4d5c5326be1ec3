"""The resource plan of a release: built from a planned project, read back from plan JSON, checked here.

``resource_plan`` turns what ``plan_project`` knows (the source's GGUF header, each variant's
dry-run types and size) into the per-job table of ``hubbot plan``: disk, memory, CPU time and the
smallest runner class per job. ``check_job`` is ``hubbot plan --check-job``: the guard a release job
runs first. It takes the job's needs from the plan JSON an earlier job wrote (``--plan-file``), or,
for the convert job of a Hub source, from the repo listing and the safetensors headers, so nothing
is downloaded before the machine is known to be big enough.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hubbot.build import throughput as tp
from hubbot.build.jobs import JobEstimate, SourceFacts, release_jobs
from hubbot.build.resources import SOFTMAX_ITEM, BenchShape, ModelShape, SensitivityShape, VariantFacts, shard_layout
from hubbot.build.runners import RUNNER_CLASSES, check_machine, runner_advice, smallest_fit
from hubbot.config import Config, TextFile, VariantConfig
from hubbot.config.recipes import FLOAT_TYPES
from hubbot.config.schema import parse_size
from hubbot.errors import HubbotError
from hubbot.gguf_io.info import TensorInfo
from hubbot.workdir import human_bytes

JOB_KINDS = ("convert", "imatrix", "build", "card")
WALL_CORES = (16, 32, 64)


def staged_variant(cfg: Config) -> VariantConfig | None:
    """The float variant the convert job publishes first and every later job starts from: the one
    in the source's dtype, else the first float variant; None sends the source to a staging branch."""
    floats = [v for v in cfg.variants if v.type in FLOAT_TYPES]
    same = [v for v in floats if v.type == cfg.source.dtype.upper()]
    return (same or floats or [None])[0]


def _chunks(cfg: Config, text: TextFile | None, ctx: int, wanted: int | None, floor: int) -> int:
    """Chunks a text allows (estimated from its size when local), at most ``wanted``."""
    if text is not None and text.path and cfg.resolve_path(text.path).is_file():
        tokens = cfg.resolve_path(text.path).stat().st_size / tp.BYTES_PER_TOKEN.value
        available = max(floor, int(tokens // ctx))
        return min(wanted, available) if wanted else available
    return wanted or 100


def bench_shape(cfg: Config, threads: int) -> BenchShape:
    b, im = cfg.benchmark, cfg.imatrix
    return BenchShape(imatrix_ctx=im.ctx, imatrix_chunks=_chunks(cfg, im.calibration, im.ctx, im.chunks, 1),
                      ctx=b.ctx, chunks=_chunks(cfg, b.text, b.ctx, b.chunks, 2), batch_chunks=b.batch_chunks,
                      speed=b.speed, repetitions=b.repetitions, threads=b.threads or threads,
                      sensitivity=_sensitivity_shape(cfg))


def _sensitivity_shape(cfg: Config) -> SensitivityShape | None:
    """recipe: auto's measurement settings, when the ladder has an auto file."""
    if not any(v.is_auto for v in cfg.variants):
        return None
    from hubbot.budget.inventory import CANDIDATES

    s = cfg.sensitivity
    return SensitivityShape(sample=s.sample, n_types=len(s.types or CANDIDATES),
                            probe_tokens=s.probe_chunks * cfg.imatrix.ctx, max_bands=s.bands, base_type=s.probe_base)


def source_facts(cfg: Config, kind: str, origin: str, resolution: dict | None, cache: Path) -> SourceFacts:
    res = resolution or {}
    files = sum(f.get("size") or 0 for f in res.get("files", []))
    if kind == "hub-safetensors":
        return SourceFacts(kind, files, "hf-cache", converts=True)
    if kind == "local-safetensors":
        return SourceFacts(kind, 0, converts=True)
    expanded = "expanded to" in origin
    if kind == "package":
        pkg = cache / "packages" / (cfg.source.python_package or "")
        size = sum(p.stat().st_size for p in pkg.glob("*.gguf")) if pkg.is_dir() else 0
        return SourceFacts(kind, size, "workdir", dequantizes=expanded)
    if kind == "hub-gguf":
        return SourceFacts(kind, files, "hf-cache", dequantizes=expanded)
    return SourceFacts(kind, 0, dequantizes=expanded)


def variant_facts(cfg: Config, name: str, file: str, type_name: str, size: int, uses_imatrix: bool,
                  tensor_types: dict[str, str], shape: ModelShape) -> VariantFacts:
    facts = VariantFacts(name, file, type_name, size, uses_imatrix, tensor_types)
    if cfg.target.max_shard_size is not None and size > parse_size(cfg.target.max_shard_size):
        facts.shards = shard_layout(shape, tensor_types, file, parse_size(cfg.target.max_shard_size))
    return facts


def job_row(job: JobEstimate, threads: int = 1) -> dict[str, Any]:
    fit = smallest_fit(job)
    return {**job.to_json(), "threads": threads, "runner": fit.name if fit else "self-hosted",
            "runner_advice": runner_advice(job),
            "wall_seconds": {f"{c}c": round(job.wall_seconds(c)) for c in WALL_CORES},
            "gpu_wall_seconds": round(job.wall_seconds(16, gpu=True)) if job.inference_param_tokens else None}


def _upstream_bytes(cfg: Config) -> int | None:
    """The upstream card's size: the file when hubbot has it, 0 when the source has none (a local
    file without ``source.card``), None when it comes from the Hub later (the plan guesses)."""
    from hubbot.card.upstream import upstream_path
    from hubbot.errors import CardError

    try:
        path = upstream_path(cfg)
    except CardError:  # a source.card that does not exist: the card step says so, the plan guesses
        return None
    if path is not None and path.is_file():
        return path.stat().st_size
    return None if cfg.source.upstream_repo else 0


def resource_plan(cfg: Config, shape: ModelShape, variants: list[VariantFacts], source: SourceFacts,
                  threads: int, *, imatrix: bool, reference: str = "artifact") -> dict[str, Any]:
    """The ``resources`` section of ``hubbot plan --json``: per job its needs and runner class."""
    bench = bench_shape(cfg, threads)
    staged_cfg = staged_variant(cfg)
    staged = next((v for v in variants if staged_cfg and v.name == staged_cfg.name), None)
    if staged is None and staged_cfg is not None:
        # Not in this selection (--only): the staged copy of the source has the source's types.
        staged = variant_facts(cfg, staged_cfg.name, cfg.file_name(staged_cfg), staged_cfg.type, shape.file_bytes,
                               False, {}, shape)
    staging = []
    if staged is None and cfg.target.max_shard_size is not None and shape.file_bytes > parse_size(cfg.target.max_shard_size):
        staging = shard_layout(shape, {}, f"{cfg.model_name}-staging.gguf", parse_size(cfg.target.max_shard_size))
    jobs = release_jobs(shape, variants, staged, source, bench, imatrix=imatrix, staging_shards=staging,
                        reference=reference, upstream_bytes=_upstream_bytes(cfg))  # type: ignore[arg-type]
    return {
        "reference": reference, "threads": bench.threads,
        "text": {"imatrix_chunks": bench.imatrix_chunks, "bench_chunks": bench.chunks},
        "artifacts": {"imatrix": 2 * shape.imatrix_bytes() if imatrix else 0,
                      "imatrix_file": shape.imatrix_bytes() if imatrix else 0,
                      "reference": next(i.bytes for i in jobs[1].disk if i.what.startswith("reference"))},
        "staged": staged.name if staged else None,
        "jobs": [job_row(j, bench.threads) for j in jobs],
        "runner_classes": [{"name": r.name, "cores": r.cores, "memory": r.memory, "disk": r.disk, "note": r.note}
                           for r in RUNNER_CLASSES],
        "throughput": tp.table(),
    }


def pick_job(rows: list[dict], job: str, only: list[str]) -> dict:
    """The row of job ``job`` (``build`` with ``--only VARIANT``, or ``build:VARIANT``)."""
    if ":" in job:
        job, variant = job.split(":", 1)
        only = [variant]
    if job not in JOB_KINDS:
        raise HubbotError(f"unknown job {job!r}; jobs are {', '.join(JOB_KINDS)} (build needs --only VARIANT)")
    if job == "build":
        if len(only) != 1:
            raise HubbotError("--check-job build needs exactly one --only VARIANT: the variant this job builds")
        name = f"build:{only[0]}"
    else:
        name = job
    for row in rows:
        if row["name"] == name:
            return row
    known = ", ".join(r["name"] for r in rows)
    raise HubbotError(f"the plan has no job {name!r} (jobs: {known}); check --only against the ladder, or write plan.json again")


def load_plan_file(cfg: Config, path: Path) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = data["resources"]["jobs"]
    except (OSError, ValueError, KeyError, TypeError):
        raise HubbotError(f"{path} is not the JSON of `hubbot plan --json` with a resources section; "
                          "write it with `hubbot plan --json > plan.json` in the convert job") from None
    if data.get("target") != cfg.target.repo:
        raise HubbotError(f"{path} plans {data.get('target')!r}, not {cfg.target.repo}; use the plan of this config")
    return rows


def places(cfg: Config) -> dict[str, Path]:
    """Where each kind of disk item goes on this machine."""
    from hubbot.source.convert import default_venv_path
    from hubbot.source.fetch import hub_cache_dir

    return {"workdir": cfg.workdir, "hf-cache": hub_cache_dir(), "home": default_venv_path().parent,
            "temp": Path(tempfile.gettempdir())}


def _tensor(name: str, shape: list[int], dtype: str) -> TensorInfo:
    """A checkpoint tensor as the converter writes it: 2-D in ``dtype`` (BF16/F16), the rest F32."""
    n = 1
    for d in shape:
        n *= int(d)
    ttype = "F32" if len(shape) < 2 else dtype.upper()
    return TensorInfo(name, ttype, tuple(int(d) for d in reversed(shape)), n, n * (4 if ttype == "F32" else 2))


def checkpoint_tensors(cfg: Config) -> tuple[str, list[TensorInfo], dict | None]:
    """(kind, tensors as the converted GGUF will hold them, source plan) of a safetensors source,
    from the safetensors headers alone: read locally, or over HTTP ranges from the Hub."""
    from hubbot.source.checkpoint import read_safetensors_header
    from hubbot.source.fetch import hub_errors, make_api
    from hubbot.source.resolve import source_plan
    from hubbot.workdir import WorkDir

    src = cfg.source
    resolution = source_plan(cfg, WorkDir(cfg.workdir).cache)
    kind = resolution.get("kind", "local")
    tensors: list[TensorInfo] = []
    if kind == "hub-safetensors":
        api = make_api(cfg)
        with hub_errors(src.repo or "", resolution["revision"], api.endpoint):
            meta = api.get_safetensors_metadata(src.repo or "", revision=resolution["revision"])
        for fm in meta.files_metadata.values():
            tensors += [_tensor(name, t.shape, src.dtype) for name, t in fm.tensors.items()]
    elif kind == "local-safetensors":
        for f in sorted(cfg.resolve_path(src.path or "").glob("*.safetensors")):
            tensors += [_tensor(name, m["shape"], src.dtype) for name, m in read_safetensors_header(f).items()
                        if name != "__metadata__"]
    return kind, tensors, resolution


def convert_estimate_before_download(cfg: Config, threads: int) -> JobEstimate:
    """The convert job's needs from the repo listing and the safetensors headers alone."""
    from hubbot.workdir import WorkDir

    kind, tensors, resolution = checkpoint_tensors(cfg)
    if not tensors:
        raise HubbotError(f"cannot size the convert job of a {kind} source before fetching it; pass the plan "
                          "of `hubbot plan --json` with --plan-file")
    file_bytes = sum(t.n_bytes for t in tensors) + (16 << 20)  # + tokenizer and metadata
    shape = ModelShape("unknown", 0, 0, 0, 1, 1, 0, 0, 0, file_bytes, tuple(tensors))
    staged_cfg = staged_variant(cfg)
    staged = None
    if staged_cfg is not None:
        staged = variant_facts(cfg, staged_cfg.name, cfg.file_name(staged_cfg), staged_cfg.type, file_bytes, False, {}, shape)
    facts = source_facts(cfg, kind, "", resolution, WorkDir(cfg.workdir).cache)
    return release_jobs(shape, [], staged, facts, bench_shape(cfg, threads), imatrix=False)[0]


def check_job(cfg: Config, job: str, only: list[str], rows: list[dict] | None, threads: int,
              memory: int | None = None) -> dict:
    """RunnerTooSmallError (one line) unless this machine can run ``job``; what was compared otherwise.

    ``rows``: the plan's job rows (from ``--plan-file`` or a plan made just now from a local source);
    None for a Hub source, where only the convert job can be sized before its download.
    """
    if rows is not None:
        row = pick_job(rows, job, only)
        estimate = JobEstimate.from_json(row)
        for item in estimate.memory:  # planned elsewhere: one softmax block per thread of this machine
            if item.what == SOFTMAX_ITEM and row.get("threads"):
                item.bytes = item.bytes * threads // row["threads"]
    elif job.split(":")[0] == "convert":
        estimate = convert_estimate_before_download(cfg, threads)
    else:
        raise HubbotError(f"--check-job {job} reads the job's needs from the plan: pass --plan-file plan.json "
                          "(written by `hubbot plan --json` in the convert job)")
    result = check_machine(estimate, places(cfg), memory)
    return {**result, "need_disk": estimate.peak_disk, "need_memory": estimate.peak_memory}


def format_hours(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return "<1 min"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def render_resources(res: dict[str, Any]) -> list[str]:
    """The per-job table of ``hubbot plan``."""
    lines = ["", f"release jobs (estimated from the tensor inventory; reference distributions: {res['reference']}; "
             "figures and runner set-up: docs/runners.md):",
             f"  {'job':<22} {'disk':>10} {'memory':>10}  {'CPU h':>6} " + " ".join(f"{c:>7}" for c in ("16c", "32c", "64c"))
             + f" {'1 GPU':>7}  runner"]
    for j in res["jobs"]:
        walls = " ".join(f"{format_hours(j['wall_seconds'][f'{c}c']):>7}" for c in WALL_CORES)
        lines.append(f"  {j['name']:<22} {human_bytes(j['disk']):>10} {human_bytes(j['memory']):>10}  "
                     f"{j['cpu_seconds'] / 3600:6.2f} {walls} {format_hours(j['gpu_wall_seconds']):>7}  {j['runner']}")
    art = res["artifacts"]
    lines.append(f"  artifacts: importance matrix {human_bytes(art['imatrix_file'])} (held twice: cache and out/), "
                 f"reference distributions {human_bytes(art['reference'])}; text: {res['text']['imatrix_chunks']} "
                 f"imatrix and {res['text']['bench_chunks']} benchmark chunks")
    return lines
