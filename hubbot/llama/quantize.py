"""The embedded quantizer: llama.cpp's ``llama_model_quantize`` through llama-cpp-python.

Each call runs in a child process (``hubbot.llama.child``). llama.cpp reports most failures as
a return code, but ``GGML_ASSERT`` aborts the whole process; in a child that abort becomes a
one-line ``BuildError`` instead of killing hubbot. Children come from a fork server (a clean
process started once): a plain ``fork`` of a process that has already run ggml's OpenMP threads
(a benchmark, say) deadlocks when the quantizer initialises the IQ grids with ``omp parallel``.
The child streams llama.cpp's log lines back, which gives the per-tensor progress bar and, for
dry runs, the exact type of every tensor after llama.cpp's own mixing rules and shape fallbacks.
"""

from __future__ import annotations

import ctypes
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from hubbot.config import recipes
from hubbot.errors import BuildError
from hubbot.llama import child, logs

# One record per tensor, possibly over several log lines (with an imatrix, llama.cpp logs a
# "did not find weights for ..." line between the head and the conversion):
#   "[ 12/ 236] blk.0.attn_q.weight - [ 640, 1024, 1, 1], type = bf16, converting to q5_0 .. size = ..."
#   "[ 12/ 236] blk.0.attn_q.weight - [ 640, 1024, 1, 1], type = bf16, size = 1.25 MiB -> 0.43 MiB (q5_0)"  (dry run)
#   "[ 13/ 236] blk.0.attn_norm.weight - [ 640, 1, 1, 1], type = f32, size = 0.002 MiB"  (copied as is)
_TENSOR_HEAD = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)\s+-\s+\[[^\]]*\],\s+type\s+=\s+(\w+),")
_CONVERTED = re.compile(r"converting to (\w+)|MiB\s+\((\w+)\)\s*$")
# "warning: blk.0.attn_k.weight - ncols 640 not divisible by 256 (required for type q4_K) -> falling back to q5_0"
_FALLBACK_LINE = re.compile(r"^warning:\s+(\S+)\s+-.*required for type\s+(\w+)\)\s+->\s+falling back to\s+(\w+)")

KV_INT, KV_FLOAT, KV_BOOL, KV_STR = 0, 1, 2, 3


def _canon_type(name: str) -> str:
    """llama.cpp logs ggml type names in lower case ('q4_K', 'bf16'); use gguf's spelling."""
    return name.upper()


@dataclass(frozen=True)
class QuantizeSpec:
    """Everything llama_model_quantize needs besides the file names and the imatrix."""

    file_type: str
    output_type: str | None = None
    embeddings_type: str | None = None
    overrides: tuple[recipes.TensorOverride, ...] = ()
    pure: bool = False
    allow_requantize: bool = False
    metadata: tuple[tuple[str, str | int | float | bool], ...] = ()
    threads: int = 0

    def describe(self) -> dict:
        """The recipe as data, for manifests and cache keys (thread count left out: it does not change bytes)."""
        return {
            "file_type": self.file_type, "output_type": self.output_type,
            "embeddings_type": self.embeddings_type,
            "overrides": [[o.pattern, o.type] for o in self.overrides],
            "pure": self.pure, "allow_requantize": self.allow_requantize,
            "metadata": [[k, v] for k, v in self.metadata],
        }


@dataclass
class TensorResult:
    name: str
    source_type: str
    type: str
    fallback_from: str | None = None


@dataclass
class QuantizeReport:
    tensors: list[TensorResult] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss: int = 0  # bytes, of the quantizer's process
    log: list[str] = field(default_factory=list)

    @property
    def type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors:
            counts[t.type] = counts.get(t.type, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def fallbacks(self) -> dict[str, str]:
        """Tensor -> 'WANTED->GOT' for every tensor that fell back because of its shape."""
        return {t.name: f"{t.fallback_from}->{t.type}" for t in self.tensors if t.fallback_from}


def _kv_array(metadata) -> ctypes.Array | None:
    import llama_cpp

    if not metadata:
        return None
    arr = (llama_cpp.llama_model_kv_override * (len(metadata) + 1))()
    for i, (key, value) in enumerate(metadata):
        kb = key.encode()
        if len(kb) >= 128:
            raise BuildError(f"metadata key {key!r} is longer than llama.cpp's 127-byte limit; shorten it")
        arr[i].key = kb
        if isinstance(value, bool):
            arr[i].tag, arr[i].value.val_bool = KV_BOOL, value
        elif isinstance(value, int):
            arr[i].tag, arr[i].value.val_i64 = KV_INT, value
        elif isinstance(value, float):
            arr[i].tag, arr[i].value.val_f64 = KV_FLOAT, value
        else:
            vb = str(value).encode()
            if len(vb) >= 128:
                raise BuildError(f"metadata {key}={value!r} is longer than llama.cpp's 127-byte limit; shorten it")
            arr[i].tag, arr[i].value.val_str = KV_STR, vb
    return arr  # zero-filled last entry terminates the list (key[0] == 0)


def build_params(spec: QuantizeSpec, imatrix: Mapping[str, np.ndarray] | None, dry_run: bool):
    """The ctypes params struct, plus the objects that must stay alive while it is used."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = spec.threads
    params.ftype = recipes.FILE_TYPES[spec.file_type][0]
    if spec.output_type:
        params.output_tensor_type = recipes.TENSOR_TYPES[spec.output_type]
    if spec.embeddings_type:
        params.token_embedding_type = recipes.TENSOR_TYPES[spec.embeddings_type]
    params.allow_requantize = spec.allow_requantize
    params.pure = spec.pure
    params.dry_run = dry_run
    keep: list[object] = []
    if spec.overrides:
        tt = (llama_cpp.llama_model_tensor_override * (len(spec.overrides) + 1))()
        for i, o in enumerate(spec.overrides):
            pattern = o.pattern.encode()
            keep.append(pattern)
            tt[i].pattern = pattern
            tt[i].type = recipes.TENSOR_TYPES[o.type]
        params.tt_overrides = tt
        keep.append(tt)
    if imatrix:
        im = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(imatrix.items()):
            arr = np.ascontiguousarray(values, dtype=np.float32)
            bname = name.encode()
            keep += [arr, bname]
            im[i].name = bname
            im[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            im[i].size = arr.size
        params.imatrix = im
        keep.append(im)
    kv = _kv_array(spec.metadata)
    if kv is not None:
        params.kv_overrides = kv
        keep.append(kv)
    return params, keep


def _quantize_in_child(_send, source: str, output: str, spec: QuantizeSpec, imatrix, dry_run: bool) -> tuple[int, int]:
    """In the child (see ``hubbot.llama.child``): llama.cpp's return code and this process's peak RSS."""
    import resource

    import llama_cpp

    params, keep = build_params(spec, imatrix, dry_run)
    rc = llama_cpp.llama_model_quantize(source.encode(), output.encode(), ctypes.byref(params))
    del keep
    return int(rc), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _LogReader:
    """Reads the quantizer's log lines as they arrive: the per-tensor report and the progress bar."""

    def __init__(self, report: QuantizeReport, progress) -> None:
        self.report, self.progress = report, progress
        self.fallbacks: dict[str, str] = {}

    def __call__(self, kind: str, lines) -> None:
        if kind != "log":
            return
        report = self.report
        for line in lines:
            report.log.append(line)
            if m := _FALLBACK_LINE.match(line):
                self.fallbacks[m.group(1)] = _canon_type(m.group(2))
                continue
            if m := _TENSOR_HEAD.match(line):
                src_type = _canon_type(m.group(4))
                report.tensors.append(TensorResult(m.group(3), src_type, src_type, self.fallbacks.get(m.group(3))))
                if self.progress is not None:
                    self.progress.total = int(m.group(2))
                    self.progress.update(1)
            if report.tensors and (c := _CONVERTED.search(line)):
                report.tensors[-1].type = _canon_type(c.group(1) or c.group(2))


def quantize(
    source: Path, output: Path, spec: QuantizeSpec, imatrix: Mapping[str, np.ndarray] | None = None,
    *, dry_run: bool = False, progress=None,
) -> QuantizeReport:
    """Run llama.cpp's quantizer on ``source`` writing ``output`` (nothing is written on dry runs).

    ``output`` is written as given: callers pass a temporary path and rename it on success; when
    this raises (an interrupt included), the quantizer's process has ended and writes no more.
    Raises BuildError with llama.cpp's own reason when the quantizer fails or aborts.
    """
    # Built here once to turn bad input into a clean error before any process starts; the child
    # builds its own copy from the same (pickled) spec and imatrix.
    _, keep = build_params(spec, imatrix, dry_run)
    report = QuantizeReport()
    start = time.perf_counter()
    # A fork server, not a plain fork: see hubbot.llama.child (OpenMP threads and fork deadlock).
    rc, report.peak_rss = child.run(
        _quantize_in_child, (str(source), str(output), spec, dict(imatrix) if imatrix else None, dry_run),
        method="forkserver", preload=("llama_cpp", "numpy", "hubbot.llama.quantize"), error=BuildError,
        what=f"quantizing {Path(source).name} to {spec.file_type}", on_message=_LogReader(report, progress))
    report.seconds = time.perf_counter() - start
    del keep
    if rc != 0:
        raise BuildError(f"llama.cpp could not quantize to {spec.file_type}: {logs.summarize(report.log)}")
    return report
