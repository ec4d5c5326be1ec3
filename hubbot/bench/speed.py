"""Speed like llama-bench: prompt processing (pp512) and generation (tg128) in tokens/s.

As llama-bench does: random tokens (BOS first), the KV cache cleared before each run, one
warm-up run of each test, the prompt decoded in batches of up to 2048 tokens, generation one
token per decode with the output synchronized after each. Each test runs ``repetitions``
times; the median is reported.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from hubbot.llama.session import LlamaContext, LlamaModel

PP_TOKENS = 512
TG_TOKENS = 128
N_BATCH = 2048


def _prompt(lctx: LlamaContext, rng: np.random.Generator, n: int) -> None:
    model = lctx.model
    tokens = rng.integers(0, model.n_vocab, size=n, dtype=np.int32)
    if model.add_bos:
        tokens[0] = model.bos
    lctx.decode_tokens(tokens, N_BATCH)
    lctx.synchronize()


def _generate(lctx: LlamaContext, rng: np.random.Generator, n: int) -> None:
    model = lctx.model
    token = model.bos if model.add_bos else int(rng.integers(model.n_vocab))
    follow = rng.integers(0, model.n_vocab, size=n, dtype=np.int32)
    for i in range(n):
        lctx.decode_token(token)
        lctx.synchronize()
        token = int(follow[i])


def measure_speed(model: LlamaModel, threads: int, repetitions: int, *, pp: int = PP_TOKENS,
                  tg: int = TG_TOKENS, progress=None) -> dict:
    """Median tokens/s of pp``pp`` and tg``tg`` over ``repetitions`` runs each."""
    rng = np.random.default_rng(0)
    results = {}
    with LlamaContext(model, pp + tg, 1, threads, n_batch=N_BATCH) as lctx:
        for name, n, run in (("pp", pp, _prompt), ("tg", tg, _generate)):
            lctx.clear()
            run(lctx, rng, n if name == "pp" else 1)  # warm-up, as llama-bench does
            rates = []
            for _ in range(repetitions):
                lctx.clear()
                start = time.perf_counter()
                run(lctx, rng, n)
                rates.append(n / (time.perf_counter() - start))
                if progress is not None:
                    progress.update(n)
            results[name] = float(statistics.median(rates))
    return {"pp": results["pp"], "tg": results["tg"], "threads": threads, "repetitions": repetitions,
            "pp_tokens": pp, "tg_tokens": tg}

