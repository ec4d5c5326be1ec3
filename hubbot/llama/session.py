"""A thin, low-level llama.cpp session for measuring: model, context, tokenizer, batches.

hubbot's measurements drive llama.cpp directly through llama-cpp-python's C bindings
(``llama_model_load_from_file``, ``llama_init_from_model``, ``llama_batch_init``,
``llama_decode``, ``llama_get_logits``) instead of the high-level ``Llama`` class: the
perplexity method needs several sequences per batch and logits for chosen positions only,
which the high-level class does not offer.

llama.cpp's own log lines go to this module's logger at DEBUG level; the last error lines
are kept so a failure can be explained in one line.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import numpy as np

from hubbot.errors import BenchError

log = logging.getLogger(__name__)

_recent: collections.deque[str] = collections.deque(maxlen=20)
_pending = [""]
_callback = None  # the ctypes callback must outlive every llama.cpp call
_backend_ready = False


def _install_logging() -> None:
    """Route llama.cpp's log through ``logging`` (once per process)."""
    global _callback, _backend_ready
    import llama_cpp

    if _callback is None:
        @llama_cpp.llama_log_callback
        def on_log(level, text, user_data):  # pieces of lines arrive separately
            _pending[0] += text.decode("utf-8", errors="replace")
            if "\n" in _pending[0]:
                *lines, _pending[0] = _pending[0].split("\n")
                for line in lines:
                    if line.strip():
                        _recent.append(line.strip())
                        log.debug("llama.cpp: %s", line)

        _callback = on_log
    llama_cpp.llama_log_set(_callback, None)
    if not _backend_ready:
        llama_cpp.llama_backend_init()
        _backend_ready = True


def _last_error() -> str:
    for line in reversed(_recent):
        low = line.lower()
        if any(w in low for w in ("error", "failed", "invalid", "exception", "unknown")):
            return line
    return _recent[-1] if _recent else "no message from llama.cpp"


class LlamaModel:
    """A loaded GGUF model (memory-mapped, never copied into Python). Use as a context manager."""

    def __init__(self, path: Path, gpu_layers: int = 0) -> None:
        import llama_cpp

        _install_logging()
        self.path = Path(path)
        if not self.path.is_file():
            raise BenchError(f"{self.path} does not exist; run `hubbot build` to create it")
        _recent.clear()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        self.ptr = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.ptr:
            raise BenchError(
                f"llama.cpp could not load {self.path.name} ({_last_error()}); "
                "check the file or rebuild it with `hubbot build --force`"
            )
        self.vocab = llama_cpp.llama_model_get_vocab(self.ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))

    def tokenize(self, data: bytes) -> np.ndarray:
        """Token ids of ``data`` as llama.cpp's tools tokenize a prompt file (special tokens added, not parsed)."""
        import llama_cpp

        n_max = len(data) + 16
        for _ in range(2):
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, True, False)
            if n >= 0:
                return np.frombuffer(buf, dtype=np.int32, count=n).copy()
            n_max = -n
        raise BenchError(f"llama.cpp could not tokenize the evaluation text with {self.path.name}")

    def close(self) -> None:
        import llama_cpp

        if getattr(self, "ptr", None):
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None

    def __enter__(self) -> LlamaModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LlamaContext:
    """A llama.cpp context on a model: KV cache for ``n_seq`` sequences of ``n_ctx_seq`` tokens each."""

    def __init__(self, model: LlamaModel, n_ctx_seq: int, n_seq: int, threads: int,
                 n_batch: int | None = None, n_ubatch: int = 512) -> None:
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
        self.ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise BenchError(
                f"llama.cpp could not create a context for {model.path.name} ({_last_error()}); "
                "try a smaller benchmark.ctx or benchmark.batch_chunks"
            )
        self.memory = llama_cpp.llama_get_memory(self.ptr)

    def clear(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(self.memory, True)

    def decode(self, batch) -> None:
        import llama_cpp

        rc = llama_cpp.llama_decode(self.ptr, batch)
        if rc != 0:
            raise BenchError(f"llama.cpp failed to evaluate a batch with {self.model.path.name} "
                             f"(code {rc}: {_last_error()})")

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

    def close(self) -> None:
        import llama_cpp

        if getattr(self, "ptr", None):
            llama_cpp.llama_free(self.ptr)
            self.ptr = None

    def __enter__(self) -> LlamaContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Batch:
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

    def close(self) -> None:
        import llama_cpp

        if self.raw is not None:
            llama_cpp.llama_batch_free(self.raw)
            self.raw = None

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
