"""`hubbot bench`: perplexity and KLD agree with llama.cpp's own perplexity tool on the real
Gemma 3 270M, KLD orders the quant types, results are reused, failures are one-line errors."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.configs import write_config
from support.llamacpp_tools import llama_tool

import hubbot.bench.quality as quality_mod
import hubbot.bench.run as bench_mod
from hubbot.bench.results import BenchResult
from hubbot.bench.run import load_results, run_bench
from hubbot.bench.text import shared_fraction
from hubbot.build.run import build
from hubbot.cli import main
from hubbot.config import load_config
from hubbot.errors import BenchError
from hubbot.workdir import WorkDir

CHUNKS = 4  # 4 x 512 tokens: small enough for 2 shared cores, enough for stable ordering

LADDER = """\
source:
  path: {source}
target:
  repo: someone/gemma-3-270m-GGUF
card:
  model_name: gemma-3-270m
build:
  threads: 2
benchmark:
  text:
    path: {text}
    name: evaluation excerpts
  ctx: 512
  chunks: {chunks}
  batch_chunks: 4
  speed: false
variants:
  - name: bf16
    type: BF16
  - name: q8_0
    type: Q8_0
  - name: q4_k
    type: Q4_K_M
  - name: q2_k
    type: Q2_K
"""

TINY = """\
source:
  path: {source}
target:
  repo: someone/tiny-GGUF
card:
  model_name: tiny
build:
  threads: 1
benchmark:
  text:
    path: {text}
  ctx: 64
  chunks: 2
  threads: 1
  repetitions: 2
variants:
  - name: f16
    type: F16
  - name: q8_0
    type: Q8_0
"""

RESULT_KEYS = {"file", "variant", "sha256", "size", "bpw", "perplexity", "kld", "speed", "settings", "engine", "text"}


# --- llama.cpp's own perplexity tool -------------------------------------------------------------

def run_llama_perplexity(model: Path, text: Path, *extra: str) -> str:
    tool = llama_tool("llama-perplexity")
    cmd = [str(tool), "-m", str(model), "-f", str(text), "-c", "512", "-b", "2048", "--chunks", str(CHUNKS),
           "-t", "2", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def grab(pattern: str, output: str) -> float:
    m = re.search(pattern, output)
    assert m, f"{pattern!r} not in llama-perplexity output:\n{output[-3000:]}"
    return float(m.group(1))


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def project(tmp_path_factory, gemma_bf16, evaluation_text):
    """The real model built as BF16, Q8_0, Q4_K_M and Q2_K, then measured once."""
    folder = tmp_path_factory.mktemp("bench")
    cfg = load_config(write_config(folder, LADDER.format(source=gemma_bf16, text=evaluation_text, chunks=CHUNKS)))
    build(cfg)
    results = run_bench(cfg)
    return cfg, {r["variant"]: r for r in results}


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory, tiny_gguf, evaluation_text):
    folder = tmp_path_factory.mktemp("tiny-bench")
    cfg = load_config(write_config(folder, TINY.format(source=tiny_gguf, text=evaluation_text)))
    build(cfg)
    return cfg


# --- the real model ------------------------------------------------------------------------------

@pytest.mark.slow
def test_perplexity_and_kld_match_llama_cpp(project, tmp_path, evaluation_text):
    cfg, res = project
    work = WorkDir(cfg.workdir)
    base = tmp_path / "bf16.kld"
    ref_out = run_llama_perplexity(work.out / res["bf16"]["file"], evaluation_text, "--kl-divergence-base", str(base))
    ref_ppl = grab(r"Final estimate: PPL = ([\d.]+)", ref_out)
    ours = res["bf16"]["perplexity"]
    assert ours["chunks"] == CHUNKS and ours["ctx"] == 512 and ours["tokens"] == CHUNKS * 255
    assert ours["ppl"] == pytest.approx(ref_ppl, rel=0.005)
    assert ours["stderr"] == pytest.approx(grab(r"PPL = [\d.]+ \+/- ([\d.]+)", ref_out), rel=0.02)

    q_out = run_llama_perplexity(work.out / res["q4_k"]["file"], evaluation_text,
                                 "--kl-divergence-base", str(base), "--kl-divergence")
    q = res["q4_k"]
    assert q["perplexity"]["ppl"] == pytest.approx(grab(r"Mean PPL\(Q\)\s*:\s*([\d.]+)", q_out), rel=0.005)
    assert q["kld"]["mean"] == pytest.approx(grab(r"Mean\s+KLD:\s*([\d.]+)", q_out), rel=0.02)
    assert q["kld"]["median"] == pytest.approx(grab(r"Median\s+KLD:\s*([\d.]+)", q_out), rel=0.05, abs=1e-4)
    assert q["kld"]["p99"] == pytest.approx(grab(r"99\.0%\s+KLD:\s*([\d.]+)", q_out), rel=0.05)
    assert 100 * q["kld"]["same_top"] == pytest.approx(grab(r"Same top p:\s*([\d.]+)", q_out), abs=0.3)
    assert 100 * q["kld"]["dp_rms"] == pytest.approx(grab(r"RMS Δp\s*:\s*([\d.]+)", q_out), rel=0.05, abs=0.01)


@pytest.mark.slow
def test_reference_against_itself_is_zero(project):
    _, res = project
    kld = res["bf16"]["kld"]
    assert kld["reference"] == "bf16"
    # The reference is stored with 16-bit log-probs: only that rounding is left. The rounded
    # distribution does not sum to exactly 1, so the mean can land a hair below zero.
    assert -1e-6 < kld["mean"] < 1e-4 and kld["max"] < 1e-3
    assert kld["same_top"] == 1.0
    assert abs(kld["dp_mean"]) < 1e-5


@pytest.mark.slow
def test_kld_orders_the_quant_types(project):
    _, res = project
    kld = {name: res[name]["kld"] for name in ("q8_0", "q4_k", "q2_k")}
    assert 0 < kld["q8_0"]["mean"] < kld["q4_k"]["mean"] < kld["q2_k"]["mean"]
    assert kld["q8_0"]["same_top"] > kld["q4_k"]["same_top"] > kld["q2_k"]["same_top"]
    assert kld["q8_0"]["dp_rms"] < kld["q4_k"]["dp_rms"] < kld["q2_k"]["dp_rms"]
    for k in kld.values():
        assert k["median"] <= k["p99"] <= k["max"]
    assert res["q2_k"]["perplexity"]["ppl"] > res["bf16"]["perplexity"]["ppl"]
    assert res["q2_k"]["bpw"] < res["q4_k"]["bpw"] < res["q8_0"]["bpw"] < res["bf16"]["bpw"]


@pytest.mark.slow
def test_results_are_stored_and_reused(project, monkeypatch):
    cfg, _ = project
    work = WorkDir(cfg.workdir)
    stored = load_results(cfg)
    assert list(stored) == [cfg.file_name(v) for v in cfg.variants]
    for name, r in stored.items():
        assert set(r) == RESULT_KEYS
        path = work.results / "bench" / f"{r['sha256']}.json"
        assert path.is_file() and r["file"] == name
        assert r["text"]["name"] == "evaluation excerpts" and r["speed"] is None
        typed = BenchResult.from_json(r)  # the typed value the card reads holds every stored figure
        assert typed.to_json() == r and typed.perplexity.ppl == r["perplexity"]["ppl"]
    stamps = {p: p.stat().st_mtime_ns for p in (work.results / "bench").glob("*.json")}

    def must_not_run(*args, **kwargs):
        raise AssertionError("a stored result was measured again")

    monkeypatch.setattr(quality_mod, "evaluate", must_not_run)
    monkeypatch.setattr(bench_mod, "evaluate", must_not_run)
    again = run_bench(cfg)
    assert [r["status"] for r in again] == ["reused"] * 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [r["perplexity"] for r in again] == [stored[r["file"]]["perplexity"] for r in again]


# --- the tiny model: errors, speed, CLI ----------------------------------------------------------

def test_speed_and_cli_json(tiny_project):
    runner = CliRunner()
    out = runner.invoke(main, ["bench", "-c", str(tiny_project.path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [r["variant"] for r in data] == ["f16", "q8_0"]
    for r in data:
        assert r["status"] == "measured"
        spd = r["speed"]
        assert spd["pp"] > 0 and spd["tg"] > 0
        assert (spd["threads"], spd["repetitions"], spd["pp_tokens"], spd["tg_tokens"]) == (1, 2, 512, 128)
        assert r["perplexity"]["chunks"] == 2 and r["perplexity"]["tokens"] == 2 * 31
        assert r["kld"]["reference"] == "f16"
    assert data[0]["kld"]["same_top"] == 1.0
    # Second run: nothing measured; the table says so.
    table = runner.invoke(main, ["bench", "-c", str(tiny_project.path)])
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["variant", "size", "bpw"]
    assert [ln.split()[0] for ln in lines[1:]] == ["f16", "q8_0"] and all(ln.endswith("reused") for ln in lines[1:])


def test_changed_settings_measure_again(tiny_project):
    first = run_bench(tiny_project, only=["q8_0"], speed=False)
    again = run_bench(tiny_project, only=["q8_0"], chunks=3, speed=False)
    assert again[0]["status"] == "measured" and again[0]["perplexity"]["chunks"] == 3
    assert first[0]["sha256"] == again[0]["sha256"]


def test_not_built_is_a_one_line_error(tmp_path, tiny_gguf, evaluation_text):
    cfg = load_config(write_config(tmp_path, TINY.format(source=tiny_gguf, text=evaluation_text)))
    with pytest.raises(BenchError, match=r"variant 'f16' is not built yet .*run `hubbot build --only f16`"):
        run_bench(cfg)


def test_short_text_is_a_one_line_error(tmp_path, tiny_gguf):
    short = tmp_path / "short.txt"
    short.write_text("Only a sentence or two of text. Far too short for two chunks.\n")
    cfg = load_config(write_config(tmp_path, TINY.format(source=tiny_gguf, text=short)))
    build(cfg, only=["f16"])
    with pytest.raises(BenchError, match="fewer than two chunks of 64") as err:
        run_bench(cfg, only=["f16"])
    assert "\n" not in str(err.value)
    out = CliRunner().invoke(main, ["bench", "-c", str(cfg.path), "--only", "f16"])
    assert out.exit_code == 1
    assert out.stderr.splitlines()[-1].startswith("error: the evaluation text has ")


def test_broken_model_is_a_one_line_error(tmp_path, tiny_gguf, evaluation_text):
    cfg = load_config(write_config(tmp_path, TINY.format(source=tiny_gguf, text=evaluation_text)))
    build(cfg)
    broken = WorkDir(cfg.workdir).out / cfg.file_name(cfg.variant("q8_0"))
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # truncated, as by a failed copy
    with pytest.raises(BenchError, match=r"llama.cpp could not load tiny-q8_0.gguf") as err:
        run_bench(cfg, only=["q8_0"])
    assert "\n" not in str(err.value)


def test_overlap_with_calibration_warns(tmp_path, tiny_gguf, evaluation_text, calibration_text, caplog):
    cal = calibration_text.read_text()
    ev = evaluation_text.read_text()
    assert shared_fraction(ev, cal) == 0
    assert shared_fraction(ev[:5000] + cal[10000:13000] + ev[5000:9000], cal) > 0.1
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(ev[:20000] + cal[1000:4000] + ev[20000:])
    cases = [(evaluation_text, None), (calibration_text, "is the calibration text"), (mixed, "shares passages")]
    for i, (text, expected) in enumerate(cases):
        folder = tmp_path / f"p{i}"
        yaml = TINY.format(source=tiny_gguf, text=text) + f"imatrix:\n  calibration:\n    path: {calibration_text}\n"
        cfg = load_config(write_config(folder, yaml))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hubbot"):
            from hubbot.bench.text import load_eval_text

            load_eval_text(cfg)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        if expected is None:
            assert warnings == []
        else:
            assert len(warnings) == 1 and expected in warnings[0]


def test_reference_falls_back_to_the_source(tmp_path, tiny_gguf, evaluation_text):
    yaml = TINY.format(source=tiny_gguf, text=evaluation_text).split("variants:")[0]
    yaml += "variants:\n  - name: q8_0\n    type: Q8_0\n  - name: q4_0\n    type: Q4_0\n"
    cfg = load_config(write_config(tmp_path, yaml))
    build(cfg)
    res = {r["variant"]: r for r in run_bench(cfg, speed=False)}
    for r in res.values():
        assert r["kld"]["reference"] == "source"
        assert r["settings"]["quality"]["reference_file"] == tiny_gguf.name
    assert 0 < res["q8_0"]["kld"]["mean"] < res["q4_0"]["kld"]["mean"]
