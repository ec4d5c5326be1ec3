"""The reference model's distributions: llama.cpp's 16-bit log-prob encoding, stored sparsely.

Per scored position, llama.cpp's ``--kl-divergence-base`` keeps the log-probabilities over the
window ``[max - 16, max]`` of the logits as 16-bit codes plus two float32 numbers per row (step and
offset: log p = step * code + offset); code 0 means "at or below the window". Codes of 0 are the
large majority (about 97% of Gemma's 262,144 entries), so hubbot stores only the non-zero codes
with their vocabulary index: the same information in about a tenth of llama.cpp's file size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubbot.workdir import write_json_atomic

WINDOW = 16.0  # nats below the maximum logit kept in the reference (llama.cpp's choice)


def softmax_stats(x: np.ndarray, tmp: np.ndarray):
    """Per row of x: argmax, max, log-sum-exp (float64) — one float32 pass for exp and sum."""
    rows = np.arange(x.shape[0])
    imax = x.argmax(axis=1)
    m = x[rows, imax]
    np.subtract(x, m[:, None], out=tmp)
    np.exp(tmp, out=tmp)
    lse = m.astype(np.float64) + np.log(tmp.sum(axis=1, dtype=np.float32).astype(np.float64))
    return rows, imax, m, lse


@dataclass
class RefRows:
    """Reference distributions of a block of k rows, sparse: entries whose 16-bit code is not 0.

    ``row``/``col``/``code`` list the non-zero codes in row-major order; ``sm`` holds each row's
    step and offset (log p = step * code + offset); a code of 0 means "at or below the window".
    """

    k: int
    row: np.ndarray
    col: np.ndarray
    code: np.ndarray
    sm: np.ndarray

    def counts(self) -> np.ndarray:
        return np.bincount(self.row, minlength=self.k)


def quantize_rows(x: np.ndarray, tmp: np.ndarray) -> RefRows:
    """llama.cpp's 16-bit log-prob encoding of each row of logits x (see the module docstring)."""
    _, _, m, lse = softmax_stats(x, tmp)
    mn = np.maximum(x.min(axis=1), m - np.float32(WINDOW))
    scale = (m - mn) / np.float32(65535)
    sm = np.empty((len(x), 2), dtype=np.float32)
    sm[:, 0] = scale
    sm[:, 1] = (mn.astype(np.float64) - lse).astype(np.float32)
    inv = np.divide(1, scale, out=np.zeros_like(scale), where=scale > 0)
    # Only entries that can round to a code >= 1 are encoded (a few percent of the vocabulary);
    # the threshold sits below the rounding point and the exact test follows on those entries.
    r, c = np.nonzero(x > (mn + np.float32(0.25) * scale)[:, None])
    codes = np.rint((x[r, c] - mn[r]) * inv[r])  # ties to even, like llama.cpp's nearest_int
    keep = codes >= 1
    return RefRows(len(x), r[keep].astype(np.int32), c[keep].astype(np.int32), codes[keep].astype(np.uint16), sm)


class ReferenceStore:
    """The reference model's distributions on disk, sparse (only non-zero 16-bit codes are kept).

    ``rows.npy`` float32 [n, 2] (step, offset per row), ``offsets.npy`` int64 [n + 1] (where each
    row's entries start), ``index.u32`` (vocabulary index) and ``code.u16`` (16-bit code) per entry,
    ``info.json`` (what was evaluated). The folder is written under a temporary name and renamed
    when complete, so an interrupted run never leaves a store that looks finished.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def info(self) -> dict | None:
        try:
            return json.loads((self.folder / "info.json").read_text())
        except (OSError, ValueError):
            return None

    def usable(self, n_chunks: int, tokens_sha: str, n_vocab: int) -> bool:
        info = self.info
        return bool(info and info["chunks"] >= n_chunks and info["tokens_sha256"] == tokens_sha
                    and info["n_vocab"] == n_vocab)

    def open(self) -> StoreReader:
        return StoreReader(self.folder)


class StoreReader:
    """Reads blocks of rows from a finished store (entries memory-mapped, never loaded whole)."""

    def __init__(self, folder: Path) -> None:
        self.sm = np.load(folder / "rows.npy")
        self.offsets = np.load(folder / "offsets.npy")
        n = int(self.offsets[-1])
        self.index = np.memmap(folder / "index.u32", dtype=np.uint32, mode="r", shape=(n,)) if n else np.zeros(0, np.uint32)
        self.code = np.memmap(folder / "code.u16", dtype=np.uint16, mode="r", shape=(n,)) if n else np.zeros(0, np.uint16)

    def rows(self, g0: int, g1: int) -> RefRows:
        a, b = int(self.offsets[g0]), int(self.offsets[g1])
        counts = np.diff(self.offsets[g0:g1 + 1])
        row = np.repeat(np.arange(g1 - g0, dtype=np.int32), counts)
        return RefRows(g1 - g0, row, np.asarray(self.index[a:b], dtype=np.int32), np.asarray(self.code[a:b]),
                       self.sm[g0:g1])


class StoreWriter:
    """Appends blocks of reference rows to a staging folder."""

    def __init__(self, folder: Path, n_rows: int) -> None:
        self.folder = folder
        self.sm = np.zeros((n_rows, 2), dtype=np.float32)
        self.offsets = np.zeros(n_rows + 1, dtype=np.int64)
        self.index = open(folder / "index.u32", "wb")
        self.code = open(folder / "code.u16", "wb")

    def add(self, g0: int, block: RefRows) -> None:
        g1 = g0 + block.k
        self.sm[g0:g1] = block.sm
        self.offsets[g0 + 1:g1 + 1] = self.offsets[g0] + np.cumsum(block.counts())
        self.index.write(block.col.astype(np.uint32).tobytes())
        self.code.write(block.code.tobytes())

    def finish(self, info: dict) -> None:
        self.index.close()
        self.code.close()
        np.save(self.folder / "rows.npy", self.sm)
        np.save(self.folder / "offsets.npy", self.offsets)
        write_json_atomic(self.folder / "info.json", info)

    def close(self) -> None:
        self.index.close()
        self.code.close()
