"""Time `hubbot build` against the raw llama-cpp-python quantize call on Gemma 3 270M.

For Q4_K_M and Q8_0, alternately: the raw binding (llama_model_quantize, in-process, the way a
user would write it) and hubbot's build of the same variant (forced rebuild: child process,
progress parsing, atomic rename, sha256, manifest). Prints the median wall time of each, their
ratio, and peak memory (max RSS of this process and of the quantizer child processes).

    python benchmarks/bench_build.py [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import llama_cpp  # noqa: E402

from hubbot.build.run import build  # noqa: E402
from hubbot.config import load_config  # noqa: E402


def raw_quantize(src: Path, dst: Path, ftype: str, threads: int) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"raw quantize to {ftype} failed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from support.fixtures import _expanded_source

    src = _expanded_source("bf16")
    tmp = Path(tempfile.mkdtemp(prefix="hubbot-bench-build-"))
    cfg_path = tmp / "variants.yaml"
    cfg_path.write_text(
        f"source:\n  path: {src}\ntarget:\n  repo: bench/gemma-GGUF\nbuild:\n  threads: {args.threads}\n"
        "variants:\n  - name: q4_k_m\n    type: Q4_K_M\n  - name: q8_0\n    type: Q8_0\n"
    )
    cfg = load_config(cfg_path)
    build(cfg, only=["q8_0"], force=True)  # warm the page cache and the source-hash cache

    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"Python {platform.python_version()}, llama-cpp-python {llama_cpp.__version__}")
    print(f"source: {src.name} ({src.stat().st_size / 1e6:.0f} MB), threads={args.threads}, reps={args.reps}")
    print(f"{'type':8} {'raw (s)':>9} {'hubbot (s)':>11} {'ratio':>7}")
    totals = {"raw": 0.0, "hubbot": 0.0}
    for ftype, name in (("Q4_K_M", "q4_k_m"), ("Q8_0", "q8_0")):
        raw_t, hub_t = [], []
        for _ in range(args.reps):
            t = time.perf_counter()
            raw_quantize(src, tmp / f"raw-{name}.gguf", ftype, args.threads)
            raw_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            build(cfg, only=[name], force=True)
            hub_t.append(time.perf_counter() - t)
        r, h = statistics.median(raw_t), statistics.median(hub_t)
        totals["raw"] += r
        totals["hubbot"] += h
        print(f"{ftype:8} {r:9.2f} {h:11.2f} {h / r:7.3f}")
    print(f"{'sum':8} {totals['raw']:9.2f} {totals['hubbot']:11.2f} {totals['hubbot'] / totals['raw']:7.3f}")
    # Both variants in one `hubbot build`: the first file's sha256 overlaps the second quantization.
    ladder = []
    for _ in range(args.reps):
        t = time.perf_counter()
        build(cfg, force=True)
        ladder.append(time.perf_counter() - t)
    lad = statistics.median(ladder)
    print(f"{'ladder':8} {totals['raw']:9.2f} {lad:11.2f} {lad / totals['raw']:7.3f}   (one build of both vs the two raw calls)")
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import json

    entries = json.loads((cfg.workdir / "manifest.json").read_text())["outputs"].values()
    kids = max(e.get("peak_rss", 0) for e in entries) / 2**20
    print(f"peak RSS: this process {me:.0f} MB (includes the raw in-process calls), hubbot's quantizer process {kids:.0f} MB")


if __name__ == "__main__":
    main()
