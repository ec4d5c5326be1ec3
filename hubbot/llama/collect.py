"""Collecting an importance matrix in-process, llama.cpp's way, through llama-cpp-python.

llama.cpp's scheduler calls an eval callback (``llama_context_params.cb_eval``) for every
graph node, first asking whether we want the node's result, then handing it over once
computed. For every MUL_MAT / MUL_MAT_ID whose weight (``src[0]``) is a ``blk.*`` tensor we
read the activations (``src[1]``, F32 ``[ne0, rows]``) and add the square of each input column
to that weight's running sums, counting the rows (per expert for MoE). This is exactly what
llama.cpp's ``llama-imatrix`` tool accumulates, so the files agree to float rounding.

The text is tokenized once and cut into chunks of ``ctx`` tokens; each chunk starts from an
empty KV cache with its first token replaced by BOS (when the model adds one), as the tool does.

Two traps, both handled here: the batch requests outputs for every position (otherwise
llama.cpp prunes the last block to the output rows and its FFN weights are never seen), and
the token storage of a batch lives in C memory (``llama_batch_init``) so nothing is freed
while ``llama_decode`` runs.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubbot.errors import ImatrixError
from hubbot.imatrix.io import ImatrixData
from hubbot.llama import child
from hubbot.llama.session import Batch, LlamaContext, LlamaModel

MIN_BATCH_TOKENS = 16  # llama.cpp ignores smaller batches (noisy, and prompt-processing only)
GGML_TYPE_F32 = 0
GGML_MAX_DIMS = 4
GGML_MAX_SRC = 10
GGML_MAX_NAME = 64


class GGMLTensor(ctypes.Structure):
    """The public ``struct ggml_tensor`` of ggml.h (llama-cpp-python does not ship one)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def _ggml_base() -> ctypes.CDLL:
    import llama_cpp

    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.restype = None
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    return lib


def _op_ids(lib: ctypes.CDLL) -> tuple[int, int]:
    """GGML_OP_MUL_MAT and GGML_OP_MUL_MAT_ID, looked up by name so a renumbering cannot bite."""
    found: dict[str, int] = {}
    # Both sit early in enum ggml_op; stop as soon as they are found (never read past the table).
    for i in range(1, 128):
        name = lib.ggml_op_name(i)
        if name in (b"MUL_MAT", b"MUL_MAT_ID"):
            found[name.decode()] = i
            if len(found) == 2:
                return found["MUL_MAT"], found["MUL_MAT_ID"]
    raise ImatrixError("this ggml build has no MUL_MAT op name; the llama-cpp-python install looks broken")


def weight_name(raw: bytes) -> str:
    """Strip backend decorations ('CUDA0#blk.0.attn_q.weight#0') the way llama.cpp does."""
    name = raw.decode("utf-8", errors="replace")
    if "#" in name:
        parts = name.split("#")
        if len(parts) >= 2:
            return parts[1]
    return name


class Collector:
    """The eval callback's state: running sums per weight, plus an early stop after the last block.

    The first graph is computed in full and the last ``blk.*`` weight it multiplies is noted;
    later graphs stop right after that weight, which skips the output projection (for Gemma's
    262,144-token vocabulary that is most of the compute) without changing any sum.
    """

    def __init__(self) -> None:
        self.lib = _ggml_base()
        self.mul_mat, self.mul_mat_id = _op_ids(self.lib)
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.final_weight: str | None = None
        self._learning = True
        self._last_seen: str | None = None
        self._buf = np.empty(0, dtype=np.uint8)
        self.error: BaseException | None = None
        self.callback = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)(self._on_node)

    def end_of_first_graph(self) -> None:
        if self._learning:
            self._learning = False
            self.final_weight = self._last_seen

    def _read(self, ptr: int) -> tuple[GGMLTensor, np.ndarray]:
        t = GGMLTensor.from_address(ptr)
        nbytes = self.lib.ggml_nbytes(ptr)
        if self._buf.size < nbytes:
            self._buf = np.empty(nbytes, dtype=np.uint8)
        self.lib.ggml_backend_tensor_get(ptr, self._buf.ctypes.data, 0, nbytes)
        return t, self._buf[:nbytes]

    def _on_node(self, ptr, ask, _user) -> bool:
        try:
            t = GGMLTensor.from_address(ptr)
            if t.op != self.mul_mat and t.op != self.mul_mat_id:
                return False
            w = GGMLTensor.from_address(t.src[0])
            name = weight_name(w.name)
            if not name.startswith("blk."):
                return False
            if ask:
                if t.op == self.mul_mat_id:
                    return True
                x = GGMLTensor.from_address(t.src[1])
                return x.ne[1] >= MIN_BATCH_TOKENS and x.type == GGML_TYPE_F32
            if t.op == self.mul_mat_id:
                self._add_moe(name, w, t)
            else:
                self._add_dense(name, w, t)
            self._last_seen = name
            # Returning False ends this graph's computation: nothing after the last block is needed.
            return not (not self._learning and name == self.final_weight)
        except BaseException as exc:  # noqa: BLE001  (never let an exception unwind through C)
            self.error = exc
            return False

    def _entry(self, name: str, ne0: int, n_mat: int) -> tuple[np.ndarray, np.ndarray]:
        sums = self.sums.get(name)
        if sums is None:
            sums = self.sums[name] = np.zeros((n_mat, ne0), dtype=np.float64)
            self.counts[name] = np.zeros(n_mat, dtype=np.int64)
        elif sums.shape != (n_mat, ne0):
            raise ImatrixError(f"{name}: activations changed shape from {sums.shape} to {(n_mat, ne0)}")
        return sums, self.counts[name]

    def _activations(self, src_ptr: int) -> np.ndarray:
        """src[1] as a float32 array of shape (ne3, ne2, ne1, ne0) honouring its strides."""
        x, raw = self._read(src_ptr)
        ne = [int(x.ne[i]) for i in range(4)]
        nb = [int(x.nb[i]) for i in range(4)]
        if nb[0] != 4:
            raise ImatrixError(f"activations of {weight_name(x.name)} are not contiguous F32 rows")
        return np.lib.stride_tricks.as_strided(
            raw.view(np.float32), shape=(ne[3], ne[2], ne[1], ne[0]), strides=(nb[3], nb[2], nb[1], nb[0]),
            writeable=False)

    def _add_dense(self, name: str, w: GGMLTensor, t: GGMLTensor) -> None:
        x = self._activations(t.src[1])
        ne3, ne2, ne1, ne0 = x.shape
        w2, w3 = int(w.ne[2]), int(w.ne[3])
        sums, counts = self._entry(name, ne0, w2 * w3)
        xx = np.square(x, dtype=np.float64)
        for i3 in range(ne3):
            for i2 in range(ne2):
                # 2-D weights with 3-D activations: everything folds onto the one matrix.
                mat = (i3 % w3) * w2 + (i2 % w2)
                sums[mat] += xx[i3, i2].sum(axis=0)
                counts[mat] += ne1

    def _add_moe(self, name: str, w: GGMLTensor, t: GGMLTensor) -> None:
        # ids: [n_expert_used, n_tokens] int32; src1: [ne0, n_expert_used or 1, n_tokens]
        x = self._activations(t.src[1])[0]  # (n_tokens, ne1, ne0)
        ids_t, raw = self._read(t.src[2])
        n_ids, n_tok = int(ids_t.ne[0]), int(ids_t.ne[1])
        ids = np.lib.stride_tricks.as_strided(raw.view(np.int32), shape=(n_tok, n_ids),
                                              strides=(int(ids_t.nb[1]), int(ids_t.nb[0])))
        n_as = int(w.ne[2])
        sums, counts = self._entry(name, x.shape[2], n_as)
        if ids.min() < 0 or ids.max() >= n_as:
            raise ImatrixError(f"{name}: expert id out of range in the router output")
        for idx in range(n_ids):
            rows = x[:, idx % x.shape[1], :].astype(np.float64) ** 2  # (n_tok, ne0)
            experts = ids[:, idx]
            np.add.at(sums, experts, rows)
            counts += np.bincount(experts, minlength=n_as)

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return self.sums, self.counts


@dataclass
class CollectSettings:
    ctx: int = 512
    chunks: int | None = None
    threads: int = 1
    gpu_layers: int = 0


def collect(model: Path, text: str, settings: CollectSettings, dataset: str,
            on_tokens: Callable[[int], None] | None = None) -> ImatrixData:
    """Run ``model`` over ``text`` and return the accumulated importance matrix.

    This computes in the calling process; prefer ``collect_isolated``. ggml's CPU backend runs
    on OpenMP, and once its threads exist in a process, a later ``fork`` (the quantizer runs in
    a forked child) can deadlock in the child.

    Raises ImatrixError when the model does not load, the text is shorter than one chunk,
    or llama.cpp fails to decode.
    """
    collector = Collector()
    with LlamaModel(model, settings.gpu_layers, error=ImatrixError,
                    fix="check that it is a complete GGUF model") as lm:
        tokens = lm.tokenize(text.encode("utf-8"), "the calibration text")
        n_ctx = settings.ctx
        n_chunks = len(tokens) // n_ctx
        if n_chunks < 1:
            raise ImatrixError(
                f"the calibration text {dataset!r} has {len(tokens)} tokens, fewer than one chunk of {n_ctx}; "
                "use a longer text or a smaller imatrix.ctx")
        if settings.chunks:
            n_chunks = min(n_chunks, settings.chunks)
        pos = np.arange(n_ctx, dtype=np.int32)
        seq = np.zeros(n_ctx, dtype=np.int32)
        every = np.ones(n_ctx, dtype=np.int8)  # outputs at every position: see the module docstring
        with LlamaContext(lm, n_ctx, 1, settings.threads, eval_callback=collector.callback,
                          fix="lower imatrix.ctx") as lctx, Batch(n_ctx) as batch:
            for c in range(n_chunks):
                chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
                if lm.add_bos:
                    chunk[0] = lm.bos
                lctx.clear()
                batch.set(chunk, pos, seq, every)
                lctx.decode(batch.raw)
                if collector.error is not None:
                    raise collector.error
                collector.end_of_first_graph()
                if on_tokens:
                    on_tokens(n_ctx)
    sums, counts = collector.result()
    return ImatrixData(
        sums={k: v.astype(np.float32) for k, v in sums.items()},
        counts={k: v.astype(np.float32) for k, v in counts.items()},
        datasets=[dataset], chunk_count=n_chunks, chunk_size=n_ctx,
    )


def _collect_in_child(send, model: str, text: str, settings: CollectSettings, dataset: str) -> ImatrixData:
    return collect(Path(model), text, settings, dataset, on_tokens=lambda n: send("tokens", n))


def collect_isolated(model: Path, text: str, settings: CollectSettings, dataset: str,
                     on_tokens: Callable[[int], None] | None = None) -> ImatrixData:
    """``collect`` in a child process: a GGML_ASSERT abort becomes an ImatrixError, and the
    model and its logits buffer are gone from memory when this returns."""

    def on_message(kind: str, payload) -> None:
        if kind == "tokens" and on_tokens:
            on_tokens(payload)

    # spawn, not fork: a forked child deadlocks in GNU OpenMP when the parent already ran
    # ggml compute threads (bench or an earlier collection in the same process).
    return child.run(_collect_in_child, (str(model), text, settings, dataset), method="spawn", error=ImatrixError,
                     what="collecting the importance matrix", on_message=on_message)
