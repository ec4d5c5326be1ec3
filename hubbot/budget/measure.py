"""The error table: for every quantizable tensor and candidate type, the imatrix-weighted error.

For a weight matrix W (rows of ``ne0`` values) and importance values w (the mean square of each
input column over the calibration text), a type's error is

    E = sum over rows i, columns j of  w_j * (W_ij - deq(quant(W))_ij)^2

which is the expected squared error the type adds to the matrix's output, E||(W - W') x||^2,
when input columns are uncorrelated. Tensors without importance values (the token embedding)
use w = 1. Quantization and dequantization run through ggml (``ggml_quants``) with the same
importance values llama.cpp's quantizer passes, so E is the error of the file it would write.

Large tensors are measured on an evenly spaced sample of rows (at most ``sample`` values per
tensor) and scaled up: every type sees the same rows, so comparisons within a tensor stay exact
where it matters and a 27B model costs minutes, not hours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from hubbot.budget import ggml_quants
from hubbot.gguf_io.info import open_reader
from hubbot.progress import bar

DEFAULT_SAMPLE = 1 << 18  # values per tensor measured (rows are sampled evenly above that)
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)\.weight$")


def role_of(name: str) -> tuple[str, int | None]:
    """('ffn_down', 3) for blk.3.ffn_down.weight; ('token_embd', None) for token_embd.weight."""
    if m := _BLOCK.match(name):
        return m.group(2), int(m.group(1))
    return name.removesuffix(".weight"), None


@dataclass
class TensorErrors:
    """One tensor's measured errors: type -> weighted squared error, summed over all its rows."""

    name: str
    shape: tuple[int, ...]  # GGUF order: (ne0, ne1, ...)
    weighted: bool  # True when importance values weighted the error
    norm: float  # the same weighted sum of W^2 (for relative errors)
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "weighted": self.weighted,
                "norm": self.norm, "errors": dict(sorted(self.errors.items()))}

    @classmethod
    def from_json(cls, d: dict) -> "TensorErrors":
        return cls(d["name"], tuple(d["shape"]), d["weighted"], d["norm"], dict(d["errors"]))


def as_float32(raw: np.ndarray, type_name: str, ne0: int) -> np.ndarray:
    """Rows of a tensor as float32 [rows, ne0], whatever its stored type."""
    if type_name == "F32":
        return np.asarray(raw, dtype=np.float32).reshape(-1, ne0)
    if type_name == "F16":
        return np.asarray(raw).view(np.float16).astype(np.float32).reshape(-1, ne0)
    if type_name == "BF16":
        return (np.asarray(raw).view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(-1, ne0)
    qtype = gguf.GGMLQuantizationType[type_name]
    return gguf.quants.dequantize(np.asarray(raw), qtype).astype(np.float32).reshape(-1, ne0)


def sample_rows(rows: np.ndarray, sample: int) -> tuple[np.ndarray, float]:
    """An evenly spaced subset of rows holding at most ``sample`` values, and the scale back to all rows."""
    n, ne0 = rows.shape
    stride = max(1, math.ceil(n * ne0 / max(sample, ne0)))
    picked = rows[stride // 2::stride]
    return np.ascontiguousarray(picked, dtype=np.float32), n / len(picked)


def _measure_one(rows: np.ndarray, scale: float, weights: np.ndarray, type_name: str,
                 imatrix: np.ndarray | None) -> float:
    deq = ggml_quants.roundtrip(type_name, rows, imatrix)
    diff = rows - deq
    return float(np.einsum("ij,ij,j->", diff, diff, weights, dtype=np.float64)) * scale


def measure_errors(source: Path, tensors: Mapping[str, list[str]], imatrix: Mapping[str, np.ndarray] | None,
                   threads: int, sample: int = DEFAULT_SAMPLE) -> dict[str, TensorErrors]:
    """The error table for ``tensors`` (name -> candidate types) of the GGUF at ``source``.

    Work is split per (tensor, type) over ``threads`` threads (ggml's quantizers release the GIL
    through ctypes); one tensor's sampled rows are held at a time per thread.
    """
    reader = open_reader(source)
    by_name = {t.name: t for t in reader.tensors}
    for types in tensors.values():
        for t in types:
            ggml_quants.prepare(t)
    total = sum(len(v) for v in tensors.values())
    out: dict[str, TensorErrors] = {}

    def rows_of(name: str):
        t = by_name[name]
        ne0 = int(t.shape[0])
        rows, scale = sample_rows(as_float32(t.data, t.tensor_type.name, ne0), sample)
        im = None if imatrix is None else imatrix.get(name)
        if im is not None and im.size != ne0:
            raise ValueError(f"{name}: the importance matrix has {im.size} values for rows of {ne0}; "
                             "mixture-of-experts tensors are not supported by recipe: auto yet")
        weights = np.ones(ne0, dtype=np.float32) if im is None else np.asarray(im, dtype=np.float32)
        return rows, scale, weights, im

    pending: list[tuple[TensorErrors, str, object]] = []

    def settle(keep: int) -> None:
        # Results are collected in submission order, so the table never depends on thread timing.
        while len(pending) > keep:
            te, t, fut = pending.pop(0)
            te.errors[t] = fut.result()
            pbar.update(1)

    with bar(total, "sensitivity", unit="type") as pbar, ThreadPoolExecutor(max(1, threads)) as pool:
        for name in sorted(tensors):
            rows, scale, weights, im = rows_of(name)
            norm = float(np.einsum("ij,ij,j->", rows, rows, weights, dtype=np.float64)) * scale
            shape = tuple(int(d) for d in by_name[name].shape)
            te = out[name] = TensorErrors(name, shape, im is not None, norm)
            pending += [(te, t, pool.submit(_measure_one, rows, scale, weights, t, im)) for t in tensors[name]]
            settle(keep=8 * max(1, threads))  # bounds the sampled rows held at once
        settle(keep=0)
    return out


def relative(errors: Iterable[TensorErrors]) -> dict[str, dict[str, float]]:
    """name -> type -> error relative to the tensor's weighted norm (for reports)."""
    return {te.name: {t: e / te.norm if te.norm else 0.0 for t, e in te.errors.items()} for te in errors}
