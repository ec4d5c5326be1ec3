"""Throughput figures behind the resource plan (hubbot/build/resources.py, table THROUGHPUT).

Measures on this machine, and prints in the units the table uses:

- quantization, per ggml type: elements per second per thread of llama.cpp's own row quantizer
  (``ggml_quantize_chunk`` from the wheel's libggml-base, the code ``llama_model_quantize`` calls),
  on random rows 5,376 wide (Gemma 3 27B's hidden size) with an importance matrix, one thread;
  plus the BF16 -> F32 expansion every converted tensor goes through first;
- sha256 (hashlib, one thread), which hubbot runs over every finished file;
- inference on Gemma 3 270M with hubbot's own code: perplexity tokens/s (``bench.quality.evaluate``,
  4 chunks x 512 as 4 sequences) and importance-matrix tokens/s (``llama.collect``), per weight
  type, turned into "matmul parameters x tokens per second per thread", the figure that scales
  to other model sizes; and generation (tg) as weight bytes read per second.

    python benchmarks/bench_throughput.py [--threads 2] [--chunks 4] [--skip-inference]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

ROW = 5376  # Gemma 3 27B hidden size: a multiple of 256, so no type falls back
QUANT_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q5_0", "Q4_0", "Q3_K", "Q2_K", "IQ4_XS", "IQ4_NL",
               "IQ3_S", "IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "F16", "BF16")
INFER_TYPES = ("BF16", "F16", "Q8_0", "Q4_K_M", "IQ2_XXS")


def _ggml():
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_bf16_to_fp32_row.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return lib


def quantize_rates(min_seconds: float) -> dict[str, float]:
    """Elements per second per thread of ggml's quantizer for each type (and 'BF16->F32')."""
    import gguf

    lib = _ggml()
    rng = np.random.default_rng(0)
    rates: dict[str, float] = {}
    src = (rng.standard_normal((64, ROW)) * 0.02).astype(np.float32)
    imatrix = rng.random(ROW).astype(np.float32) + 0.1
    for name in QUANT_TYPES:
        t = int(gguf.GGMLQuantizationType[name])
        dst = np.empty(lib.ggml_row_size(t, ROW) * len(src), dtype=np.uint8)
        lib.ggml_quantize_chunk(t, src.ctypes.data, dst.ctypes.data, 0, len(src), ROW, imatrix.ctypes.data)  # init grids
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            lib.ggml_quantize_chunk(t, src.ctypes.data, dst.ctypes.data, 0, len(src), ROW, imatrix.ctypes.data)
            n += src.size
        rates[name] = n / (time.perf_counter() - start)
    bf16 = np.zeros(src.size * 64, dtype=np.uint16)
    out = np.empty(bf16.size, dtype=np.float32)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        lib.ggml_bf16_to_fp32_row(bf16.ctypes.data, out.ctypes.data, bf16.size)
        n += bf16.size
    rates["BF16->F32"] = n / (time.perf_counter() - start)
    return rates


def sha256_rate(min_seconds: float) -> float:
    buf = np.random.default_rng(1).integers(0, 255, 64 << 20, dtype=np.uint8).tobytes()
    h, n, start = hashlib.sha256(), 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        h.update(buf)
        n += len(buf)
    return n / (time.perf_counter() - start)


def matmul_params(path: Path) -> int:
    """Parameters multiplied per token: 2-D block weights plus the output projection (tied: token_embd)."""
    from hubbot.gguf_io.info import read_info

    info = read_info(path)
    names = {t.name for t in info.tensors}
    total = 0
    for t in info.tensors:
        if len(t.shape) == 2 and (t.name.startswith("blk.") or t.name == "output.weight"
                                  or (t.name == "token_embd.weight" and "output.weight" not in names)):
            total += t.n_elements
    return total


def inference_rates(src: Path, threads: int, chunks: int, work: Path) -> list[dict]:
    from hubbot.bench.quality import evaluate
    from hubbot.bench.speed import measure_speed
    from hubbot.llama.collect import CollectSettings, collect_isolated
    from hubbot.llama.quantize import QuantizeSpec, quantize
    from hubbot.llama.session import LlamaModel

    text = (Path(__file__).resolve().parent.parent / "examples" / "data" / "evaluation.txt").read_bytes()
    calib = (Path(__file__).resolve().parent.parent / "examples" / "data" / "calibration.txt").read_text()
    params = matmul_params(src)
    rows = []
    imatrix = None
    for ftype in INFER_TYPES:
        path = src if ftype == "BF16" else work / f"{ftype}.gguf"
        if not path.exists():
            quantize(src, path, QuantizeSpec(file_type=ftype, threads=threads), imatrix)
        with LlamaModel(path) as model:
            tokens = model.tokenize(text)
            start = time.perf_counter()
            evaluate(model, tokens, ctx=512, n_chunks=chunks, n_seq=4, threads=threads)
            ppl = chunks * 512 / (time.perf_counter() - start)
            speed = measure_speed(model, threads, 2)
        row = {"type": ftype, "bytes": path.stat().st_size, "ppl_tok_s": ppl, "tg_tok_s": speed["tg"],
               "pp_tok_s": speed["pp"]}
        if ftype == "BF16":
            start = time.perf_counter()
            data = collect_isolated(path, calib, CollectSettings(ctx=512, chunks=chunks, threads=threads), "bench")
            row["imatrix_tok_s"] = chunks * 512 / (time.perf_counter() - start)
            imatrix = data.values()
        row["param_tok_s_per_thread"] = ppl * params / threads
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum time per quantize/hash measurement")
    ap.add_argument("--skip-inference", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}")
    print(f"quantization, one thread, rows of {ROW} with an imatrix (million elements/s):")
    for name, rate in quantize_rates(args.seconds).items():
        print(f"  {name:10} {rate / 1e6:9.1f}")
    print(f"sha256: {sha256_rate(args.seconds) / 1e6:.0f} MB/s")
    if args.skip_inference:
        return
    from support.fixtures import _expanded_source

    src = _expanded_source("bf16")
    with tempfile.TemporaryDirectory(prefix="hubbot-bench-throughput-") as tmp:
        rows = inference_rates(src, args.threads, args.chunks, Path(tmp))
    print(f"inference on {src.name} ({matmul_params(src) / 1e6:.0f}M matmul parameters), {args.threads} threads, "
          f"{args.chunks} chunks x 512:")
    print(f"  {'type':8} {'ppl tok/s':>10} {'G param.tok/s/thread':>21} {'pp tok/s':>9} {'tg tok/s':>9} {'tg GB/s':>8}")
    for r in rows:
        print(f"  {r['type']:8} {r['ppl_tok_s']:10.1f} {r['param_tok_s_per_thread'] / 1e9:21.2f} {r['pp_tok_s']:9.1f} "
              f"{r['tg_tok_s']:9.1f} {r['tg_tok_s'] * r['bytes'] / 1e9:8.2f}")
    im = rows[0].get("imatrix_tok_s")
    if im:
        print(f"  imatrix collection (BF16): {im:.1f} tok/s = "
              f"{im * matmul_params(src) / args.threads / 1e9:.2f} G param.tok/s/thread")


if __name__ == "__main__":
    main()
