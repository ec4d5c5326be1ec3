"""``python -m hubbot.llama.selfcheck``: does this llama-cpp-python quantize and run quantized models?

Builds a tiny model, quantizes it with the embedded engine and runs a short generation in a
child process, so a CPU that faults on the compiled kernels (SIGILL) is reported instead of
crashing the caller. Exit status 0 when everything works.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

_GENERATE = (
    "import sys, llama_cpp\n"
    "llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, n_threads=1, verbose=False)\n"
    "llm('hello', max_tokens=2)\n"
)


def check() -> list[str]:
    """Problems found (empty when the engine works)."""
    from hubbot.llama.quantize import QuantizeSpec, quantize
    from hubbot.testing.tinymodel import write_tiny_gguf

    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        src = write_tiny_gguf(Path(tmp) / "tiny.gguf")
        for ftype in ("Q8_0", "Q4_0", "Q4_K_M"):
            out = Path(tmp) / f"tiny-{ftype}.gguf"
            quantize(src, out, QuantizeSpec(ftype, threads=1))
            run = subprocess.run([sys.executable, "-c", _GENERATE, str(out)], capture_output=True, text=True)
            if run.returncode != 0:
                why = "illegal instruction (SIGILL)" if run.returncode in (-4, 132) else f"exit {run.returncode}"
                problems.append(f"running a {ftype} model failed: {why}")
    return problems


def main() -> int:
    problems = check()
    for p in problems:
        print(f"selfcheck: {p}", file=sys.stderr)
    if problems:
        print("selfcheck: reinstall llama-cpp-python from source with scripts/setup.sh", file=sys.stderr)
        return 1
    print("selfcheck: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
