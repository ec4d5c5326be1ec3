"""A thin, low-level llama.cpp session: model, context, tokenizer, batches.

Everything in hubbot that loads a model goes through here: the measurements (``hubbot.bench``)
and the imatrix collection (``hubbot.llama.collect``, which passes its eval callback). It
drives llama.cpp directly through llama-cpp-python's C bindings (``llama_model_load_from_file``,
``llama_init_from_model``, ``llama_batch_init``, ``llama_decode``, ``llama_get_logits``) instead
of the high-level ``Llama`` class: the perplexity method needs several sequences per batch and
logits for chosen positions only, which the high-level class does not offer.

llama.cpp's own log lines go to the logger (``hubbot.llama.logs``); a failure is explained in
one line from the last of them. After every C call that may log, ``interrupts.check()`` raises
a SIGINT/SIGTERM that arrived inside the log callback, where it could not be raised. Errors are raised as the caller's class (``error=``), so a
model that does not load is a BenchError in ``bench`` and an ImatrixError in ``imatrix``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hubbot import interrupts
from hubbot.errors import BenchError, HubbotError
from hubbot.llama import logs

_backend_ready = False


def _init_backend() -> None:
    """Route llama.cpp's log to the logger and initialise its backends (once per process)."""
    global _backend_ready
    import llama_cpp

    logs.route()
    if not _backend_ready:
        llama_cpp.llama_backend_init()
        _backend_ready = True
    interrupts.check()


class _Handle:
    """A llama.cpp object released by ``close()``, or at the end of a ``with`` block."""

    def _release(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LlamaModel(_Handle):
    """A loaded GGUF model (memory-mapped, never copied into Python). Use as a context manager.

    ``fix`` ends the message when llama.cpp cannot load the file: what the user can do about it.
    """

    def __init__(self, path: Path, gpu_layers: int = 0, *, error: type[HubbotError] = BenchError,
                 fix: str = "check the file or rebuild it with `hubbot build --force`") -> None:
        import llama_cpp

        _init_backend()
        self.path = Path(path)
        self.error = error
        if not self.path.is_file():
            raise error(f"{self.path} does not exist; run `hubbot build` to create it")
        logs.clear_recent()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        self.ptr = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        interrupts.check()  # a signal during the load (llama.cpp logs through a C callback)
        if not self.ptr:
            raise error(f"llama.cpp could not load {self.path.name} ({logs.last_error()}); {fix}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))

    def tokenize(self, data: bytes, what: str = "the evaluation text") -> np.ndarray:
        """Token ids of ``data`` as llama.cpp's tools tokenize a prompt file (special tokens added, not parsed)."""
        import llama_cpp

        n_max = len(data) + 16
        for _ in range(2):  # a byte-fallback vocabulary can need more tokens than bytes: retry once
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, True, False)
            if n >= 0:
                return np.frombuffer(buf, dtype=np.int32, count=n).copy()
            n_max = -n
        raise self.error(f"llama.cpp could not tokenize {what} with {self.path.name}")

    def _release(self) -> None:
        import llama_cpp

        if getattr(self, "ptr", None):
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None


class LlamaContext(_Handle):
    """A llama.cpp context on a model: KV cache for ``n_seq`` sequences of ``n_ctx_seq`` tokens each.

    ``eval_callback`` (a ctypes ``ggml_backend_sched_eval_callback``, kept alive by the caller)
    sees every graph node (the imatrix collection); ``fix`` ends the message when llama.cpp
    cannot create the context.
    """

    def __init__(self, model: LlamaModel, n_ctx_seq: int, n_seq: int, threads: int,
                 n_batch: int | None = None, n_ubatch: int = 512, *, eval_callback=None,
                 fix: str = "try a smaller benchmark.ctx or benchmark.batch_chunks") -> None:
        import llama_cpp

        self.model = model
        params = llama_cpp.llama_context_default_params()
        # The same shape llama.cpp's perplexity tool uses: n_seq separate (non-unified) sequences.
        params.n_ctx = n_ctx_seq * n_seq
        params.n_batch = n_batch or n_ctx_seq * n_seq
        params.n_ubatch = min(n_ubatch, params.n_batch)
        params.n_seq_max = n_seq
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        if eval_callback is not None:
            params.cb_eval = eval_callback
            params.cb_eval_user_data = None
        self.ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        interrupts.check()
        if not self.ptr:
            raise model.error(f"llama.cpp could not create a context of {params.n_ctx} tokens for "
                              f"{model.path.name} ({logs.last_error()}); {fix}")
        self.memory = llama_cpp.llama_get_memory(self.ptr)
        self._one = (llama_cpp.llama_token * 1)()

    def clear(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(self.memory, True)

    def decode(self, batch) -> None:
        import llama_cpp

        rc = llama_cpp.llama_decode(self.ptr, batch)
        interrupts.check()
        if rc != 0:
            raise self.model.error(f"llama.cpp failed to evaluate a batch with {self.model.path.name} "
                                   f"(code {rc}: {logs.last_error()})")

    def decode_tokens(self, tokens: np.ndarray, n_batch: int) -> None:
        """Decode one sequence continuing the cache, ``n_batch`` tokens per call (no outputs kept)."""
        import llama_cpp

        for start in range(0, len(tokens), n_batch):
            piece = np.ascontiguousarray(tokens[start:start + n_batch], dtype=np.int32)
            arr = (llama_cpp.llama_token * len(piece)).from_buffer(piece)
            # ``piece``/``arr`` stay referenced until llama_decode returns (the batch borrows them)
            self.decode(llama_cpp.llama_batch_get_one(arr, len(piece)))

    def decode_token(self, token: int) -> None:
        """Decode a single token continuing the cache (one generation step)."""
        import llama_cpp

        self._one[0] = token
        self.decode(llama_cpp.llama_batch_get_one(self._one, 1))

    def logits(self, n_rows: int) -> np.ndarray:
        """The output logits of the last decode, [n_rows, n_vocab] float32, in batch order.

        A view into llama.cpp's buffer: valid only until the next decode.
        """
        import llama_cpp

        ptr = llama_cpp.llama_get_logits(self.ptr)
        return np.ctypeslib.as_array(ptr, shape=(n_rows, self.model.n_vocab))

    def synchronize(self) -> None:
        import llama_cpp

        llama_cpp.llama_synchronize(self.ptr)

    def _release(self) -> None:
        import llama_cpp

        if getattr(self, "ptr", None):
            llama_cpp.llama_free(self.ptr)
            self.ptr = None


class Batch(_Handle):
    """A ``llama_batch`` with numpy views on its token, position and output-flag arrays."""

    def __init__(self, capacity: int) -> None:
        import llama_cpp

        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.token = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self.n_seq_id = np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))
        self.output = np.ctypeslib.as_array(self.raw.logits, shape=(capacity,))
        self._seq = np.full(capacity, -1, dtype=np.int64)

    def set(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, output: np.ndarray) -> None:
        """Fill the batch with len(tokens) entries (one sequence id each)."""
        n = len(tokens)
        if n > self.capacity:
            raise ValueError(f"batch of {n} tokens exceeds capacity {self.capacity}")
        self.token[:n] = tokens
        self.pos[:n] = pos
        self.n_seq_id[:n] = 1
        self.output[:n] = output
        changed = np.nonzero(self._seq[:n] != seq)[0]
        for i in changed:  # each entry owns its own seq_id array; touch only what changed
            self.raw.seq_id[int(i)][0] = int(seq[i])
        self._seq[:n] = seq
        self.raw.n_tokens = n

    def _release(self) -> None:
        import llama_cpp

        if self.raw is not None:
            llama_cpp.llama_batch_free(self.raw)
            self.raw = None
