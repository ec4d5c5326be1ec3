"""The jobs of a release and what each needs, assembled from the formulas in ``resources.py``.

``release_jobs`` turns the model's shape, the ladder's dry-run facts and the benchmark settings into
one ``JobEstimate`` per job of the release flow (convert, imatrix, one build per variant, card).
``reference="rebuilt"`` describes the workflow before the staged flow, where the imatrix job and every
build job also built the float reference variant locally (kept to price that alternative); the
default ``"artifact"`` is the release flow: the reference distributions are computed once and handed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hubbot.bench.speed import PP_TOKENS, TG_TOKENS
from hubbot.build import throughput as tp
from hubbot.build.resources import (
    BenchShape,
    Item,
    ModelShape,
    SensitivityShape,
    VariantFacts,
    inference_memory,
    quantizable,
    quantize_memory,
    reference_bytes,
    type_nbytes,
)

# The card job's files, as allocated 4 KB blocks (fitted on the 270M example release and the tiny
# checkpoint release of tests/test_release_flow.py): README.md, the chart, the config, the
# imatrix's entry (CARD_BASE_BYTES); per variant its manifest entry, its record in
# hubbot-results.json, its bench result and its card row (CARD_VARIANT_BYTES); in the entry and the
# record, one line per tensor the quantizer gave a fallback type (rows that do not split into the
# type's blocks: 90 per K-/IQ-quant of the 270M); for a recipe: auto file, its per-tensor list of
# raised and lowered types, in the entry and the record (about 100 bytes per tensor each); and the
# upstream card twice (its cached copy, and the copy at the end of README.md).
CARD_BASE_BYTES, CARD_VARIANT_BYTES, CARD_FALLBACK_BYTES, CARD_AUTO_TENSOR_BYTES = 24 << 10, 10 << 10, 90, 200
# An upstream card hubbot has not seen yet (a plan before the source is fetched): MedGemma's is 35 KB.
CARD_UPSTREAM_GUESS = 32 << 10


@dataclass
class SourceFacts:
    """How the source reaches the convert job: what is fetched, where, and whether it is converted."""

    kind: str  # local | package | hub-gguf | hub-safetensors | local-safetensors
    fetch_bytes: int = 0  # downloaded into the Hub cache, or assembled from a package
    fetch_where: str = "hf-cache"
    converts: bool = False  # safetensors -> GGUF with llama.cpp's converter
    dequantizes: bool = False  # a quantized GGUF expanded to BF16/F16 with gguf (the 270M example)


@dataclass
class JobEstimate:
    name: str
    kind: str  # convert | imatrix | build | card
    variant: str | None
    disk: list[Item]
    memory: list[Item]
    memory_step: str
    cpu_seconds: float = 0.0  # compute that spreads over the cores (quantizing, conversion)
    inference_cpu_seconds: float = 0.0  # model passes (imatrix, perplexity, KLD, speed): CPU or GPU
    inference_param_tokens: float = 0.0  # the same work as parameters x tokens, for the GPU estimate
    serial_seconds: float = 0.0  # hashing, copying: not faster with more cores
    generation_bytes: float = 0.0  # weights read by the speed test's generation: memory-bound
    download: int = 0
    upload: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def peak_disk(self) -> int:
        return sum(i.bytes for i in self.disk)

    @property
    def peak_memory(self) -> int:
        return sum(i.bytes for i in self.memory)

    def wall_seconds(self, cores: int, gpu: bool = False) -> float:
        """Estimated elapsed time on ``cores`` cores (model passes on one GPU when ``gpu``)."""
        if gpu:
            infer = (self.inference_param_tokens / tp.THROUGHPUT["gpu_inference"].value
                     + self.generation_bytes / tp.THROUGHPUT["gpu_bandwidth"].value)
        else:
            bandwidth = tp.THROUGHPUT["tg_bandwidth"].value * min(cores, tp.TG_THREADS_CAP.value)
            infer = self.inference_cpu_seconds / cores + self.generation_bytes / bandwidth
        transfer = (self.download + self.upload) / tp.THROUGHPUT["network"].value
        return self.cpu_seconds / cores + infer + self.serial_seconds + transfer

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "variant": self.variant,
            "disk": self.peak_disk, "disk_items": [i.to_json() for i in self.disk],
            "memory": self.peak_memory, "memory_step": self.memory_step,
            "memory_items": [i.to_json() for i in self.memory],
            "cpu_seconds": round(self.cpu_seconds + self.inference_cpu_seconds, 1),
            "compute_seconds": round(self.cpu_seconds, 1), "inference_cpu_seconds": round(self.inference_cpu_seconds, 1),
            "inference_param_tokens": self.inference_param_tokens,
            "serial_seconds": round(self.serial_seconds, 1), "generation_bytes": self.generation_bytes,
            "download": self.download, "upload": self.upload, "notes": self.notes,
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> JobEstimate:
        """The estimate as ``to_json`` wrote it (a plan file handed from an earlier job)."""
        return cls(row["name"], row["kind"], row.get("variant"),
                   [Item(i["what"], i["bytes"], i["where"]) for i in row["disk_items"]],
                   [Item(i["what"], i["bytes"], i["where"]) for i in row["memory_items"]], row["memory_step"],
                   row["compute_seconds"], row["inference_cpu_seconds"], row["inference_param_tokens"],
                   row["serial_seconds"], row["generation_bytes"], row["download"], row["upload"],
                   list(row.get("notes", [])))


def _hash(nbytes: int) -> float:
    return nbytes / tp.THROUGHPUT["sha256"].value


def quantize_seconds(shape: ModelShape, tensor_types: dict[str, str], threads: int = 1) -> tuple[float, float]:
    """(compute seconds on one thread, serial I/O seconds) of building one variant from ``shape``."""
    cpu = io = 0.0
    for t in shape.tensors:
        dst = tensor_types.get(t.name, t.type)
        if dst == t.type:
            io += 2 * t.n_bytes / tp.THROUGHPUT["copy"].value  # read + write, no conversion
            continue
        if t.type != "F32":
            cpu += t.n_elements / tp.THROUGHPUT["bf16_to_f32"].value
        cpu += t.n_elements / tp.quantize_rate(dst)
    return cpu, io


def _variant_bytes(v: VariantFacts) -> int:
    return sum(s["bytes"] for s in v.shards) if v.shards else v.size


def _bench(shape: ModelShape, bench: BenchShape, job: JobEstimate, model_bytes: int, weight_type: str) -> None:
    """Add one variant's perplexity/KLD pass and speed test to ``job``'s time."""
    params = shape.matmul_params
    tokens = bench.chunks * bench.ctx + (bench.repetitions + 1) * PP_TOKENS * bench.speed
    job.inference_param_tokens += tokens * params
    job.inference_cpu_seconds += tokens * params / tp.inference_rate(weight_type)
    if bench.speed:  # generation reads every weight once per token: memory-bound
        job.generation_bytes += (bench.repetitions * TG_TOKENS + 1) * model_bytes


def _bench_memory(shape: ModelShape, bench: BenchShape, model_bytes: int) -> list[Item]:
    n_scored = bench.ctx - 1 - bench.ctx // 2
    return inference_memory(shape, model_bytes, ctx=bench.ctx, n_seq=bench.batch_chunks,
                            n_outputs=bench.batch_chunks * n_scored, scoring_threads=bench.threads)


def _peak(steps: dict[str, list[Item]]) -> tuple[str, list[Item]]:
    name = max(steps, key=lambda k: sum(i.bytes for i in steps[k]))
    return name, steps[name]


def convert_job(shape: ModelShape, staged: VariantFacts | None, source: SourceFacts, staging_shards: list[dict]) -> JobEstimate:
    disk: list[Item] = []
    steps: dict[str, list[Item]] = {}
    job = JobEstimate("convert", "convert", staged.name if staged else None, disk, [], "")
    largest = max(t.n_bytes for t in shape.tensors)
    if source.fetch_bytes:
        disk.append(Item("source files (" + source.kind + ")", source.fetch_bytes, source.fetch_where))
        if source.fetch_where == "hf-cache":
            job.download += source.fetch_bytes
    if source.converts:
        disk.append(Item("converter venv (torch, transformers)", int(tp.CONVERTER_VENV.value), "home"))
        disk.append(Item("converted GGUF", shape.file_bytes))
        steps["convert"] = [Item("converter (Python, torch)", int(tp.CONVERTER_BASE.value), "ram"),
                            Item("largest tensor, loaded and converted", 2 * largest, "ram")]
        job.serial_seconds += source.fetch_bytes / tp.THROUGHPUT["convert_safetensors"].value
    elif source.dequantizes:
        disk.append(Item("expanded GGUF", shape.file_bytes))
        n_max = max(t.n_elements for t in shape.tensors)
        # gguf.quants: float32 values, their astype copy, and the re-encoding's temporaries.
        steps["expand"] = [Item("hubbot process", int(tp.PROCESS_BASE.value), "ram"),
                           Item("largest tensor expanding (float32 and temporaries)",
                                int(tp.DEQUANTIZE_BYTES.value * n_max), "ram")]
        job.serial_seconds += shape.n_params / tp.THROUGHPUT["dequantize_numpy"].value
    job.serial_seconds += _hash(shape.file_bytes)
    if staged is not None:
        disk.append(Item(f"{staged.file} (staged float variant)", staged.size))
        steps[f"build {staged.name}"] = quantize_memory(shape, staged.tensor_types, False)
        cpu, io = quantize_seconds(shape, staged.tensor_types)
        job.cpu_seconds += cpu
        job.serial_seconds += io + _hash(staged.size)
        if staged.shards:
            disk.append(Item(f"{len(staged.shards)} shards of {staged.file}", _variant_bytes(staged)))
            job.serial_seconds += 2 * staged.size / tp.THROUGHPUT["copy"].value + _hash(staged.size)
        job.upload += _variant_bytes(staged)
    else:
        job.notes.append("no float variant in the ladder: the converted source goes to a staging branch")
        if staging_shards:
            disk.append(Item(f"{len(staging_shards)} staging shards", sum(s["bytes"] for s in staging_shards)))
        job.upload += sum(s["bytes"] for s in staging_shards) or shape.file_bytes
    if len(steps) == 0:
        steps["push"] = [Item("hubbot process", int(tp.PROCESS_BASE.value), "ram")]
    job.memory_step, job.memory = _peak(steps)
    return job


def imatrix_job(shape: ModelShape, staged_bytes: int, staged: VariantFacts | None, bench: BenchShape,
                imatrix: bool, reference: str) -> JobEstimate:
    disk = [Item("staged BF16 (Hub cache)", staged_bytes, "hf-cache")]
    job = JobEstimate("imatrix", "imatrix", None, disk, [], "", download=staged_bytes)
    job.serial_seconds += _hash(staged_bytes)
    steps: dict[str, list[Item]] = {}
    if imatrix:
        disk.append(Item("importance matrix (cache and out/)", 2 * shape.imatrix_bytes()))
        steps["imatrix"] = inference_memory(shape, staged_bytes, ctx=bench.imatrix_ctx, n_seq=1,
                                            n_outputs=bench.imatrix_ctx)
        work = bench.imatrix_chunks * bench.imatrix_ctx * shape.block_matmul_params
        job.inference_param_tokens += work
        job.inference_cpu_seconds += work / tp.THROUGHPUT["imatrix"].value
    disk.append(Item("reference distributions (sparse)", reference_bytes(shape, bench)))
    steps["reference distributions"] = _bench_memory(shape, bench, staged_bytes)
    if bench.sensitivity is not None:
        steps["sensitivity probes"] = _sensitivity(shape, bench, bench.sensitivity, job, staged_bytes)
    _bench(shape, bench, job, staged_bytes, staged.type if staged else "BF16")
    if reference == "rebuilt" and staged is not None:
        _rebuild_reference(shape, staged, job)
    job.memory_step, job.memory = _peak(steps)
    return job


def _sensitivity(shape: ModelShape, bench: BenchShape, s: SensitivityShape, job: JobEstimate,
                 staged_bytes: int) -> list[Item]:
    """recipe: auto's measurement (hubbot.budget): an error table of every quantizable tensor in
    every candidate type, then one probe per role and block band, each a whole-model build (at the
    probe base type) measured on the calibration text; one probe file exists at a time."""
    converted = quantizable(shape.tensors)
    job.cpu_seconds += len(converted) * s.sample * s.n_types / tp.quantize_rate("Q4_K")
    base = {t.name: s.base_type for t in converted} if s.base_type else {}
    cpu, io = quantize_seconds(shape, base)
    probe_bytes = (sum(type_nbytes(t.n_elements, s.base_type) for t in converted)
                   + sum(t.n_bytes for t in shape.tensors if t not in converted)) if s.base_type else staged_bytes
    from hubbot.budget.calibrate import bands
    from hubbot.budget.measure import role_of

    roles = {role_of(t.name)[0] for t in converted}
    n = len(roles) + len(bands(shape.n_layer, s.max_bands)) + (1 if s.base_type else 0)  # + a quantized base alone
    job.cpu_seconds += n * cpu
    job.serial_seconds += n * io
    work = (n + 1) * s.probe_tokens * shape.matmul_params  # the probes and the source's own pass
    job.inference_param_tokens += work
    job.inference_cpu_seconds += work / tp.inference_rate(s.base_type or "BF16")
    job.disk.append(Item("one probe build at a time (cache/budget)", probe_bytes))
    job.notes.append(f"recipe: auto sensitivity: {n} probe builds of {probe_bytes / 1e9:.1f} GB each")
    return inference_memory(shape, probe_bytes, ctx=bench.imatrix_ctx, n_seq=1, n_outputs=bench.imatrix_ctx)


def _rebuild_reference(shape: ModelShape, staged: VariantFacts, job: JobEstimate) -> None:
    """The older flow: bench compared with a built file, so the job built the float variant too."""
    job.disk.append(Item(f"{staged.file} (reference, rebuilt)", staged.size))
    cpu, io = quantize_seconds(shape, staged.tensor_types)
    job.cpu_seconds += cpu
    job.serial_seconds += io + _hash(staged.size)
    job.notes.append(f"builds {staged.name} again as the KLD reference")


def build_job(shape: ModelShape, v: VariantFacts, staged_bytes: int, staged: VariantFacts | None,
              bench: BenchShape, reference: str) -> JobEstimate:
    disk = [Item("staged BF16 (Hub cache)", staged_bytes, "hf-cache")]
    job = JobEstimate(f"build:{v.name}", "build", v.name, disk, [], "", download=staged_bytes)
    job.serial_seconds += _hash(staged_bytes)
    if v.uses_imatrix:
        disk.append(Item("importance matrix (artifact and out/)", 2 * shape.imatrix_bytes()))
    ref = reference_bytes(shape, bench)
    disk.append(Item("reference distributions (artifact)", ref))
    disk.append(Item(v.file, v.size))
    if v.shards:
        disk.append(Item(f"{len(v.shards)} shards of {v.file}", _variant_bytes(v)))
        job.serial_seconds += 2 * v.size / tp.THROUGHPUT["copy"].value + _hash(v.size)
    cpu, io = quantize_seconds(shape, v.tensor_types)
    job.cpu_seconds += cpu
    job.serial_seconds += io + _hash(v.size)
    steps = {f"quantize {v.name}": quantize_memory(shape, v.tensor_types, v.uses_imatrix),
             f"bench {v.name}": _bench_memory(shape, bench, v.size) + [Item("reference distributions (mapped)", ref, "ram")]}
    _bench(shape, bench, job, v.size, v.type)
    if reference == "rebuilt" and staged is not None:
        _rebuild_reference(shape, staged, job)
    job.upload += _variant_bytes(v)
    job.memory_step, job.memory = _peak(steps)
    return job


def staged_build_job(shape: ModelShape, v: VariantFacts, staged_bytes: int, bench: BenchShape) -> JobEstimate:
    """The matrix job of the staged float variant: the convert job built and pushed it, so this job
    fetches it (that copy is the variant), measures it and hands its record to the card job."""
    ref = reference_bytes(shape, bench)
    disk = [Item(f"{v.file} (staged copy)", staged_bytes, "workdir"), Item("reference distributions (artifact)", ref)]
    job = JobEstimate(f"build:{v.name}", "build", v.name, disk, [], "", download=staged_bytes)
    job.serial_seconds += _hash(staged_bytes)
    _bench(shape, bench, job, v.size, v.type)
    job.memory_step, job.memory = _peak({f"bench {v.name}": _bench_memory(shape, bench, v.size)
                                         + [Item("reference distributions (mapped)", ref, "ram")]})
    job.notes.append("built and pushed by the convert job: fetched, measured, nothing quantized or uploaded")
    return job


def fallback_count(shape: ModelShape, v: VariantFacts) -> int:
    """Tensors of ``v`` the quantizer gives a fallback type: rows not a multiple of the type's block."""
    import gguf

    blocks = quantizable(t for t in shape.tensors if t.name.startswith("blk."))
    name = v.type or max(set(v.tensor_types.values()) or {"F16"}, key=list(v.tensor_types.values()).count)
    if name in ("F32", "F16", "BF16"):
        return 0
    # File types missing from the tensor-type enum (Q4_K_M, IQ3_M, ...) are K/IQ mixes: 256-value blocks.
    qtype = getattr(gguf.GGMLQuantizationType, name, None)
    block = gguf.GGML_QUANT_SIZES[qtype][0] if qtype is not None else 256
    return sum(1 for t in blocks if t.shape[0] % block)


def card_job(shape: ModelShape, variants: list[VariantFacts], upstream_bytes: int | None = None) -> JobEstimate:
    """The card job: merge the build jobs' records, render, push README.md (``upstream_bytes``: the
    upstream card's size when it is known)."""
    n_quantized = len(quantizable(shape.tensors))
    per_variant = sum(CARD_VARIANT_BYTES + CARD_FALLBACK_BYTES * fallback_count(shape, v)
                      + (CARD_AUTO_TENSOR_BYTES * n_quantized if v.auto else 0) for v in variants)
    upstream = CARD_UPSTREAM_GUESS if upstream_bytes is None else upstream_bytes
    files = CARD_BASE_BYTES + per_variant + 2 * _blocks(upstream)
    job = JobEstimate("card", "card", None, [Item("job results, manifest, records, README.md", files)],
                      [Item("hubbot process (no engine)", int(tp.CARD_PROCESS.value), "ram")], "render",
                      serial_seconds=5.0 + 0.5 * len(variants))
    return job


def _blocks(nbytes: int, block: int = 4096) -> int:
    """``nbytes`` as the filesystem allocates them: whole blocks (a file of 28 bytes takes 4 KB)."""
    return -(-nbytes // block) * block


def release_jobs(shape: ModelShape, variants: list[VariantFacts], staged: VariantFacts | None, source: SourceFacts,
                 bench: BenchShape, *, imatrix: bool, staging_shards: list[dict] | None = None,
                 reference: Literal["artifact", "rebuilt"] = "artifact",
                 upstream_bytes: int | None = None) -> list[JobEstimate]:
    """One estimate per job: convert, imatrix (importance matrix and reference), build per variant, card."""
    jobs = [convert_job(shape, staged, source, staging_shards or [])]
    staged_bytes = _variant_bytes(staged) if staged else (sum(s["bytes"] for s in staging_shards or []) or shape.file_bytes)
    jobs.append(imatrix_job(shape, staged_bytes, staged, bench, imatrix, reference))
    for v in variants:
        if staged is not None and v.name == staged.name and reference == "artifact":
            jobs.append(staged_build_job(shape, v, staged_bytes, bench))
        elif staged is None or v.name != staged.name:
            jobs.append(build_job(shape, v, staged_bytes, staged, bench, reference))
    jobs.append(card_job(shape, variants, upstream_bytes))
    return jobs
