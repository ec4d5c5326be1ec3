"""Time hubbot's importance-matrix collection on Gemma 3 270M (and llama.cpp's llama-imatrix, if built).

hubbot's side is ``collect_isolated``: a spawned child process that loads the model, tokenizes
the calibration text and decodes ``--chunks`` chunks of ``--ctx`` tokens with the eval callback
reading every MUL_MAT's activations. The figure is the median wall time over ``--reps`` runs,
start-up of the child included. When the test suite has built llama.cpp's own ``llama-imatrix``
(tests/support/llamacpp_tools.py), the same work is timed with it, alternately.

    python benchmarks/bench_imatrix.py [--reps 3] [--chunks 8] [--threads 2] [--no-tool]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hubbot.llama.collect import CollectSettings, collect_isolated  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-tool", action="store_true", help="Time hubbot only, not llama-imatrix.")
    args = ap.parse_args()

    import llama_cpp
    from support.fixtures import _expanded_source
    from support.llamacpp_tools import tools_dir
    from support.paths import DATA_DIR

    src = _expanded_source("bf16")
    text_path = DATA_DIR / "calibration.txt"
    text = text_path.read_text()
    tool = tools_dir() / "bin" / "llama-imatrix"
    settings = CollectSettings(ctx=args.ctx, chunks=args.chunks, threads=args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"Python {platform.python_version()}, llama-cpp-python {llama_cpp.__version__}")
    print(f"model: {src.name}, {args.chunks} chunks x {args.ctx} tokens, threads={args.threads}, reps={args.reps}")
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.reps):
            start = time.perf_counter()
            data = collect_isolated(src, text, settings, "calibration.txt")
            ours.append(time.perf_counter() - start)
            assert data.chunk_count == args.chunks
            if tool.is_file() and not args.no_tool:
                start = time.perf_counter()
                subprocess.run([str(tool), "-m", str(src), "-f", str(text_path), "-o", str(Path(tmp) / "ref.gguf"),
                                "-c", str(args.ctx), "-b", str(args.ctx), "--chunks", str(args.chunks), "--no-ppl",
                                "-t", str(args.threads)], check=True, capture_output=True)
                theirs.append(time.perf_counter() - start)
    print(f"hubbot collect_isolated: median {statistics.median(ours):.2f} s  (runs: "
          + ", ".join(f"{t:.2f}" for t in ours) + ")")
    if theirs:
        print(f"llama-imatrix:           median {statistics.median(theirs):.2f} s  (runs: "
              + ", ".join(f"{t:.2f}" for t in theirs) + ")")
        print(f"ratio hubbot / llama-imatrix: {statistics.median(ours) / statistics.median(theirs):.2f}")


if __name__ == "__main__":
    main()
