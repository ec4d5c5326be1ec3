"""Layer-adaptive recipes: shape fallbacks for explicit types, the built-in dynamic-* recipes,
their size against the standard mix, and that they beat it on held-out text (real model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from support.configs import write_config
from support.paths import REPO_ROOT

from hubbot.build.plan import plan_project, render_plan
from hubbot.build.run import build
from hubbot.config import load_config, recipes
from hubbot.gguf_io.info import read_info

DYNAMIC = sorted(recipes.BUILTIN_RECIPES)


def test_fit_type_follows_llama_cpp_fallbacks():
    assert recipes.fit_type("Q5_K", 5376) == "Q5_K"  # 27B rows fit K-quants
    assert recipes.fit_type("Q5_K", 640) == "Q5_1"
    assert recipes.fit_type("Q6_K", 640) == "Q8_0"
    assert recipes.fit_type("Q4_K", 640) == "Q5_0"
    assert recipes.fit_type("IQ2_XXS", 640) == "IQ4_NL"
    assert recipes.fit_type("IQ4_XS", 640) == "IQ4_NL"
    assert recipes.fit_type("Q4_0", 640) == "Q4_0"
    assert recipes.fit_type("IQ2_XXS", 100) == "F16"  # not even 32-blocks fit


def test_fit_overrides_puts_exact_fixes_first():
    overrides = recipes.compile_layer_rules([recipes.LayerRule("all", "IQ4_XS", ("attn_q", "ffn_down"))], 2)
    rows = {"blk.0.attn_q.weight": 640, "blk.1.attn_q.weight": 640,
            "blk.0.ffn_down.weight": 2048, "blk.1.ffn_down.weight": 2048}
    fitted = recipes.fit_overrides(overrides, rows)
    assert [(o.pattern, o.type) for o in fitted[:2]] == [
        (r"^blk\.0\.attn_q\.weight$", "IQ4_NL"), (r"^blk\.1\.attn_q\.weight$", "IQ4_NL")]
    assert fitted[2:] == overrides
    assert recipes.fit_overrides(overrides, {k: 4096 for k in rows}) == overrides


@pytest.mark.parametrize("name", DYNAMIC)
def test_builtin_recipes_are_position_rules(name):
    r = recipes.BUILTIN_RECIPES[name]
    assert r["type"] == name.removeprefix("dynamic-").upper()
    rules = [recipes.LayerRule(x["blocks"], x["type"], tuple(x["roles"])) for x in r["layers"]]
    for n_blocks in (18, 62):
        overrides = recipes.compile_layer_rules(rules, n_blocks)

        def chosen(block: int, role: str, overrides=overrides) -> str | None:
            import re

            name = f"blk.{block}.{role}.weight"
            return next((o.type for o in overrides if re.search(o.pattern, name)), None)

        for block in (0, n_blocks - 1):  # the outermost blocks are protected
            assert chosen(block, "ffn_down") not in (None, r["type"])
            assert chosen(block, "attn_v") == "Q4_K"
        middle = n_blocks // 2
        assert chosen(middle, "attn_v") is None  # the middle keeps llama.cpp's own choice
        assert chosen(middle, "ffn_down") != chosen(0, "ffn_down")


def test_27b_growth_stays_within_ten_percent(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import bench_adaptive

    for row in bench_adaptive.estimate_27b(list(bench_adaptive.TYPES), tmp_path):
        growth = (row["dyn"] - row["std"]) / row["std"]
        assert 0 < growth <= 0.10, (row["type"], growth)


def _config(folder: Path, model: Path, text: Path, variants: str, chunks: int = 1) -> Path:
    return write_config(folder, f"""
source: {{path: {model}}}
target: {{repo: me/gemma}}
card: {{model_name: gemma-3-270m}}
imatrix:
  calibration: {{path: {text}}}
  chunks: {chunks}
variants:
{variants}
""")


@pytest.mark.slow
def test_plan_shows_blocks_and_size_vs_standard(gemma_bf16, calibration_text, tmp_path):
    variants = "\n".join(f"  - {{name: {n}, recipe: {n}}}" for n in DYNAMIC)
    cfg = load_config(_config(tmp_path, gemma_bf16, calibration_text, variants))
    data = plan_project(cfg, threads=2)
    text = render_plan(data)
    for v in data["variants"]:
        assert v["standard_size"] and v["size"] <= 1.10 * v["standard_size"]
        blocks = v["blocks"]
        # edges get the protected ffn_down type, the middle the base (or middle) type
        assert blocks["ffn_down"][0] != blocks["ffn_down"][9]
        assert blocks["attn_v"][0] == "Q5_0"  # Q4_K on 640-wide rows falls back like llama.cpp's
        assert f"vs standard {v['type']}" in text
    assert "ffn_down" in text and "attn_output" in text


@pytest.mark.slow
def test_adaptive_iq2_xxs_builds_and_beats_the_standard_mix(gemma_bf16, calibration_text, evaluation_text, tmp_path):
    cfg = load_config(_config(tmp_path, gemma_bf16, calibration_text,
                              "  - {name: iq2_xxs, type: IQ2_XXS}\n  - {name: dynamic-iq2_xxs, recipe: dynamic-iq2_xxs}",
                              chunks=4))
    results = {r.name: r for r in build(cfg, threads=2)}
    std = cfg.workdir / "out" / results["iq2_xxs"].file
    dyn = cfg.workdir / "out" / results["dynamic-iq2_xxs"].file
    types = read_info(dyn).tensor_types()
    assert types["blk.0.ffn_down.weight"] == "IQ4_XS" and types["blk.9.ffn_down.weight"] == "IQ2_XXS"
    assert dyn.stat().st_size <= 1.10 * std.stat().st_size

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import multiprocessing as mp

    import bench_adaptive

    # In a fresh child process: llama.cpp's OpenMP threads in the pytest process would deadlock the
    # forked quantizer of every later test.
    with mp.get_context("spawn").Pool(1) as pool:
        p_std, p_dyn = pool.starmap(bench_adaptive.perplexity, [(std, evaluation_text, 512, 3, 2),
                                                               (dyn, evaluation_text, 512, 3, 2)])
    assert np.isfinite(p_std) and np.isfinite(p_dyn)
    assert p_dyn < p_std, (p_dyn, p_std)
