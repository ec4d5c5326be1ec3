"""Perplexity and KL divergence with llama.cpp's method, so the figures compare with its tools.

The method (llama.cpp ``tools/perplexity``):

- the text is tokenized once (BOS added when the model adds it) and split into chunks of
  ``ctx`` tokens; the KV cache is cleared for every chunk and the chunk's first token is
  replaced by BOS;
- only the second half of each chunk is scored: the logits at positions ``ctx/2 .. ctx-2``
  predict the tokens at ``ctx/2+1 .. ctx-1`` (255 tokens per chunk of 512);
- PPL = exp(mean NLL), standard error = PPL * sqrt(var(NLL) / (n - 1)).

Several chunks share one ``llama_batch`` as separate sequences, logits are requested only for
the scored positions, and every softmax runs in float32 over blocks of 16 rows on a small thread
pool, reading llama.cpp's own output buffer in place: no more than one batch's scored logits are
ever held, and never a copy of them.

KL divergence compares each scored position with the reference model's distribution, stored
once in llama.cpp's 16-bit encoding (see ``bench_reference``). As in llama.cpp, terms whose
reference log-probability is below -16 are left out of the KL sum.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hubbot.bench.reference import WINDOW, RefRows, StoreReader, StoreWriter, quantize_rows, softmax_stats
from hubbot.errors import BenchError
from hubbot.llama.session import Batch, LlamaContext, LlamaModel
from hubbot.workdir import check_free_space

log = logging.getLogger(__name__)

ROWS = 16  # rows per softmax block: 16 x 262,144 float32 = 16 MiB temporaries


def chunk_count(n_tokens: int, ctx: int, wanted: int | None) -> int:
    """Chunks the text allows (at most ``wanted``); BenchError when fewer than two."""
    available = n_tokens // ctx
    if available < 2:
        raise BenchError(
            f"the evaluation text has {n_tokens} tokens, fewer than two chunks of {ctx}; "
            f"give benchmark.text a longer text (at least {2 * ctx} tokens) or lower benchmark.ctx"
        )
    return available if wanted is None else max(2, min(wanted, available))


def scored_logits(lctx: LlamaContext, tokens: np.ndarray, ctx: int, n_chunks: int, n_seq: int,
                  progress=None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(chunk, logits, targets)`` per chunk: logits [ctx-1-ctx/2, n_vocab] predict targets.

    ``logits`` is a view into llama.cpp's buffer, valid until the generator resumes.
    """
    model = lctx.model
    first = ctx // 2
    n_scored = ctx - 1 - first
    local_pos = np.arange(ctx, dtype=np.int32)
    local_out = ((local_pos >= first) & (local_pos <= ctx - 2)).astype(np.int8)
    with Batch(ctx * n_seq) as batch:
        for i in range(0, n_chunks, n_seq):
            k = min(n_seq, n_chunks - i)
            toks = tokens[i * ctx:(i + k) * ctx].reshape(k, ctx).copy()
            if model.add_bos:
                toks[:, 0] = model.bos
            seq = np.repeat(np.arange(k, dtype=np.int32), ctx)
            batch.set(toks.ravel(), np.tile(local_pos, k), seq, np.tile(local_out, k))
            lctx.clear()
            lctx.decode(batch.raw)
            logits = lctx.logits(k * n_scored)
            for s in range(k):
                c = i + s
                targets = tokens[c * ctx + first + 1:(c + 1) * ctx]
                yield c, logits[s * n_scored:(s + 1) * n_scored], targets
            if progress is not None:
                progress.update(k * ctx)


@dataclass
class Accumulator:
    """Running sums for PPL and the per-position KLD / Δp values of one model."""

    nll: list[np.ndarray] = field(default_factory=list)
    kld: list[np.ndarray] = field(default_factory=list)
    dp: list[np.ndarray] = field(default_factory=list)
    same_top: int = 0

    def merge(self, other: Accumulator) -> None:
        self.nll += other.nll
        self.kld += other.kld
        self.dp += other.dp
        self.same_top += other.same_top

    def perplexity(self, chunks: int, ctx: int) -> dict:
        nll = np.concatenate(self.nll).astype(np.float64)
        n = len(nll)
        mean = float(nll.mean())
        var = float((nll * nll).mean() - mean * mean)
        ppl = float(np.exp(mean))
        stderr = ppl * float(np.sqrt(var / (n - 1))) if var > 0 and n > 1 else 0.0
        return {"ppl": ppl, "stderr": stderr, "chunks": chunks, "ctx": ctx, "tokens": n}

    def divergence(self, reference: str) -> dict:
        kld = np.concatenate(self.kld).astype(np.float64)
        dp = np.concatenate(self.dp).astype(np.float64)
        return {
            "reference": reference, "mean": float(kld.mean()), "median": float(np.median(kld)),
            "p99": float(np.percentile(kld, 99.0)), "max": float(kld.max()),
            "same_top": self.same_top / len(kld), "dp_mean": float(dp.mean()),
            "dp_rms": float(np.sqrt((dp * dp).mean())),
        }


def _score_block(x: np.ndarray, targets: np.ndarray, ref: RefRows | None, acc: Accumulator,
                 tmp: np.ndarray) -> Accumulator:
    """NLL (and KLD against the reference rows, when given) for one block of rows of logits x."""
    rows, imax, _, lse = softmax_stats(x, tmp)
    nll = lse - x[rows, targets]
    acc.nll.append(nll)
    if ref is None:
        return acc
    k, n_vocab = x.shape
    scale, offset = ref.sm[:, 0].astype(np.float64), ref.sm[:, 1].astype(np.float64)
    lpb = ref.code * ref.sm[ref.row, 0] + ref.sm[ref.row, 1]  # float32 log p_ref
    # KL(p_ref || q) = sum p_ref * (log p_ref - log q) over entries with log p_ref > -16 (llama.cpp's rule)
    terms = np.exp(lpb) * (lpb - x[ref.row, ref.col] + lse[ref.row].astype(np.float32))
    kld = np.bincount(ref.row, weights=np.where(lpb > -WINDOW, terms, 0), minlength=k)
    counts = ref.counts()
    for r in np.nonzero(offset > -WINDOW)[0]:  # code-0 entries count too when the window floor is above -16
        sel = ref.row == r
        n0 = n_vocab - counts[r]
        sum_x0 = float(x[r].sum(dtype=np.float64)) - float(x[r, ref.col[sel]].sum(dtype=np.float64))
        kld[r] += np.exp(offset[r]) * (n0 * (offset[r] + lse[r]) - sum_x0)
    # The reference's top token: the largest code, lowest index on ties; token 0 for an all-zero row.
    imax_base = np.zeros(k, dtype=np.int64)
    if len(ref.code):
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        nonempty = counts > 0
        top = np.zeros(k, dtype=np.uint16)
        top[nonempty] = np.maximum.reduceat(ref.code, starts[nonempty])
        hit = np.nonzero(ref.code == top[ref.row])[0]
        first_rows, first = np.unique(ref.row[hit], return_index=True)
        imax_base[first_rows] = ref.col[hit[first]]
    # The reference's probability of the correct token.
    code_t = np.zeros(k, dtype=np.float64)
    if len(ref.code):
        key = ref.row.astype(np.int64) * n_vocab + ref.col  # sorted: entries are row-major
        want = rows.astype(np.int64) * n_vocab + targets
        at = np.minimum(np.searchsorted(key, want), len(key) - 1)
        code_t = np.where(key[at] == want, ref.code[at], 0).astype(np.float64)
    nll_base = -(scale * code_t + offset)
    acc.kld.append(kld)
    acc.dp.append(np.exp(-nll) - np.exp(-nll_base))
    acc.same_top += int((imax == imax_base).sum())
    return acc


class _Scorer:
    """Scores blocks of rows on a small thread pool: numpy releases the GIL, so the float32
    softmax of one block runs while another block is scored (each thread has its own buffer)."""

    def __init__(self, n_vocab: int, threads: int) -> None:
        self.n_vocab = n_vocab
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="hubbot-score")

    def _tmp(self, k: int) -> np.ndarray:
        if getattr(self.local, "tmp", None) is None:
            self.local.tmp = np.empty((ROWS, self.n_vocab), dtype=np.float32)
        return self.local.tmp[:k]

    def _block(self, x, targets, reference: StoreReader | None, g0: int, write: bool):
        tmp = self._tmp(len(x))
        ref = None
        if write:
            ref = quantize_rows(x, tmp)
        elif reference is not None:
            ref = reference.rows(g0, g0 + len(x))
        return _score_block(x, targets, ref, Accumulator(), tmp), ref

    def chunk(self, logits, targets, chunk: int, reference: StoreReader | None, write: bool):
        """(Accumulator, [RefRows written]) for one chunk's scored rows, blocks kept in order."""
        n = len(logits)
        base = chunk * n
        futures = [self.pool.submit(self._block, logits[r0:r0 + ROWS], targets[r0:r0 + ROWS], reference,
                                    base + r0, write) for r0 in range(0, n, ROWS)]
        acc, written = Accumulator(), []
        for f in futures:  # in submission order: results do not depend on thread timing
            part, ref = f.result()
            acc.merge(part)
            if write:
                written.append(ref)
        return acc, written

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def evaluate(model: LlamaModel, tokens: np.ndarray, *, ctx: int, n_chunks: int, n_seq: int, threads: int,
             reference: StoreReader | None = None, write_reference: Path | None = None,
             reference_info: dict | None = None, progress=None) -> Accumulator:
    """One pass over the chunks: NLL per scored token, and KLD against ``reference`` when given.

    With ``write_reference`` the pass also stores this model's distributions in that folder (and
    scores itself against them, which gives its KLD against itself: zero up to the 16-bit rounding).
    """
    n_scored = ctx - 1 - ctx // 2
    acc = Accumulator()
    writer = staging = None
    if write_reference is not None:
        # Sparse entries take ~6 bytes each; a few percent of the vocabulary per row in practice.
        check_free_space(write_reference.parent, n_chunks * n_scored * model.n_vocab // 4, "the reference distributions")
        staging = write_reference.with_name(write_reference.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        writer = StoreWriter(staging, n_chunks * n_scored)
    scorer = _Scorer(model.n_vocab, threads)
    try:
        with LlamaContext(model, ctx, n_seq, threads) as lctx:
            for chunk, logits, targets in scored_logits(lctx, tokens, ctx, n_chunks, n_seq, progress):
                part, written = scorer.chunk(logits, targets, chunk, reference, writer is not None)
                acc.merge(part)
                for i, block in enumerate(written):
                    writer.add(chunk * n_scored + i * ROWS, block)
        if writer is not None:
            assert staging is not None and write_reference is not None
            writer.finish({**(reference_info or {}), "chunks": n_chunks, "ctx": ctx,
                           "rows": n_chunks * n_scored, "n_vocab": model.n_vocab})
            shutil.rmtree(write_reference, ignore_errors=True)
            staging.rename(write_reference)
            staging = None
    finally:
        scorer.close()
        if writer is not None:
            writer.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return acc
