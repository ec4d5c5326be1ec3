"""Throughput figures behind the resource plan (hubbot/build/resources.py, table THROUGHPUT).

Measures on this machine, and prints in the units the table uses. Every figure is work per
CPU-second of one thread (``time.thread_time`` / ``getrusage``), measured with one thread, so other
load on a shared machine does not inflate it; the plan scales it by the cores of a runner.

- quantization, per ggml type: elements per second per thread of llama.cpp's own row quantizer
  (``ggml_quantize_chunk`` from the wheel's libggml-base, the code ``llama_model_quantize`` calls),
  on random rows 5,376 wide (Gemma 3 27B's hidden size) with an importance matrix, one thread;
  plus the BF16 -> F32 expansion every converted tensor goes through first;
- sha256 (hashlib, one thread), which hubbot runs over every finished file;
- inference on Gemma 3 270M with hubbot's own code, one thread: perplexity (``bench.quality.evaluate``,
  4 chunks x 512 as 4 sequences) and the importance matrix (``llama.collect``, which stops after
  the last block), per weight type, as "matmul parameters x tokens per CPU-second", the figure that
  scales to other model sizes; and generation (tg) as weight bytes read per CPU-second.

    python benchmarks/bench_throughput.py [--chunks 4] [--skip-inference] [--work DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

ROW = 5376  # Gemma 3 27B hidden size: a multiple of 256, so no type falls back
QUANT_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q5_0", "Q4_0", "Q3_K", "Q2_K", "IQ4_XS", "IQ4_NL",
               "IQ3_S", "IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "F16", "BF16")
INFER_TYPES = ("BF16", "F16", "Q8_0", "Q4_K_M", "IQ2_XXS")
TG = 32  # generated tokens timed per type


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
        n, start = 0, time.thread_time()
        while time.thread_time() - start < min_seconds:
            lib.ggml_quantize_chunk(t, src.ctypes.data, dst.ctypes.data, 0, len(src), ROW, imatrix.ctypes.data)
            n += src.size
        rates[name] = n / (time.thread_time() - start)
    bf16 = np.zeros(src.size * 64, dtype=np.uint16)
    out = np.empty(bf16.size, dtype=np.float32)
    n, start = 0, time.thread_time()
    while time.thread_time() - start < min_seconds:
        lib.ggml_bf16_to_fp32_row(bf16.ctypes.data, out.ctypes.data, bf16.size)
        n += bf16.size
    rates["BF16->F32"] = n / (time.thread_time() - start)
    return rates


def sha256_rate(min_seconds: float) -> float:
    buf = np.random.default_rng(1).integers(0, 255, 64 << 20, dtype=np.uint8).tobytes()
    h, n, start = hashlib.sha256(), 0, time.thread_time()
    while time.thread_time() - start < min_seconds:
        h.update(buf)
        n += len(buf)
    return n / (time.thread_time() - start)


def matmul_params(path: Path, blocks_only: bool = False) -> int:
    """Parameters multiplied per token: 2-D block weights plus (unless ``blocks_only``) the output
    projection (tied: token_embd)."""
    from hubbot.gguf_io.info import read_info

    info = read_info(path)
    names = {t.name for t in info.tensors}
    out = "output.weight" if "output.weight" in names else "token_embd.weight"
    return sum(t.n_elements for t in info.tensors
               if len(t.shape) == 2 and (t.name.startswith("blk.") or (t.name == out and not blocks_only)))


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def inference_rates(src: Path, chunks: int, work: Path, on_row=None) -> list[dict]:
    """One row per weight type: parameters x tokens per CPU-second (perplexity, imatrix), tg bytes/CPU-s."""
    from hubbot.bench.quality import evaluate
    from hubbot.bench.speed import _generate
    from hubbot.llama.collect import CollectSettings, collect_isolated
    from hubbot.llama.quantize import QuantizeSpec, quantize
    from hubbot.llama.session import LlamaContext, LlamaModel

    text = (ROOT / "examples" / "data" / "evaluation.txt").read_bytes()
    calib = (ROOT / "examples" / "data" / "calibration.txt").read_text()
    params, block_params = matmul_params(src), matmul_params(src, blocks_only=True)
    rows = []
    imatrix = None
    for ftype in INFER_TYPES:
        path = src if ftype == "BF16" else work / f"{ftype}.gguf"
        if not path.exists():
            quantize(src, path, QuantizeSpec(file_type=ftype, threads=1), imatrix)
        with LlamaModel(path) as model:
            tokens = model.tokenize(text)
            start = _cpu()
            evaluate(model, tokens, ctx=512, n_chunks=chunks, n_seq=4, threads=1)
            ppl_cpu = _cpu() - start
            with LlamaContext(model, 64, 1, 1) as lctx:  # generation as the speed test runs it
                rng = np.random.default_rng(0)
                _generate(lctx, rng, 4)  # warm-up
                lctx.clear()
                start = _cpu()
                _generate(lctx, rng, TG)
                tg_cpu = (_cpu() - start) / TG
        row = {"type": ftype, "bytes": path.stat().st_size, "param_tok_per_cpu_s": chunks * 512 * params / ppl_cpu,
               "tg_bytes_per_cpu_s": path.stat().st_size / tg_cpu}
        if ftype == "BF16":
            start = _cpu(resource.RUSAGE_CHILDREN)
            data = collect_isolated(path, calib, CollectSettings(ctx=512, chunks=chunks, threads=1), "bench")
            row["imatrix_param_tok_per_cpu_s"] = chunks * 512 * block_params / (_cpu(resource.RUSAGE_CHILDREN) - start)
            imatrix = data.values()
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum time per quantize/hash measurement")
    ap.add_argument("--skip-inference", action="store_true")
    ap.add_argument("--skip-quantize", action="store_true")
    ap.add_argument("--work", type=Path, default=None, help="keep the quantized 270M variants here (reused)")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}")
    if not args.skip_quantize:
        print(f"quantization, one thread, rows of {ROW} with an imatrix (million elements/s):")
        for name, rate in quantize_rates(args.seconds).items():
            print(f"  {name:10} {rate / 1e6:9.1f}", flush=True)
        print(f"sha256: {sha256_rate(args.seconds) / 1e6:.0f} MB/s", flush=True)
    if args.skip_inference:
        return
    from support.fixtures import _expanded_source

    src = _expanded_source("bf16")
    print(f"inference on {src.name} ({matmul_params(src) / 1e6:.0f}M matmul parameters, "
          f"{matmul_params(src, True) / 1e6:.0f}M in blocks), one thread, {args.chunks} chunks x 512, per CPU-second:")
    print(f"  {'type':8} {'G param.tok (ppl)':>18} {'tg GB':>7} {'G param.tok (imatrix)':>22}", flush=True)

    def show(r: dict) -> None:
        im = r.get("imatrix_param_tok_per_cpu_s")
        print(f"  {r['type']:8} {r['param_tok_per_cpu_s'] / 1e9:18.2f} {r['tg_bytes_per_cpu_s'] / 1e9:7.2f}"
              + (f" {im / 1e9:22.2f}" if im else ""), flush=True)

    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        inference_rates(src, args.chunks, args.work, show)
    else:
        with tempfile.TemporaryDirectory(prefix="hubbot-bench-throughput-") as tmp:
            inference_rates(src, args.chunks, Path(tmp), show)


if __name__ == "__main__":
    main()
