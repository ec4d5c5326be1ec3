"""Importance matrices: collection, file formats, validation, caching, and parity with llama.cpp.

The parity reference is llama.cpp's own ``llama-imatrix`` tool, built from the llama.cpp
sources that llama-cpp-python 0.3.36 vendors (tests/support/llamacpp_tools.py), run on the same
model, text, context and chunk count as hubbot.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.configs import write_config

from hubbot.build.run import build, prepare
from hubbot.config import load_config
from hubbot.errors import BuildError, ImatrixError
from hubbot.gguf_io.info import read_info
from hubbot.imatrix import ensure as im
from hubbot.imatrix.io import ImatrixData, read_dat, read_gguf, read_imatrix, write_dat, write_gguf
from hubbot.llama.collect import CollectSettings, collect_isolated
from hubbot.llama.quantize import QuantizeSpec, quantize


def _random_data(seed: int = 0) -> ImatrixData:
    rng = np.random.default_rng(seed)
    data = ImatrixData(datasets=["some text.txt"], chunk_count=7, chunk_size=512)
    data.sums["blk.0.attn_q.weight"] = rng.random((1, 64), dtype=np.float32) * 100
    data.counts["blk.0.attn_q.weight"] = np.array([3584], dtype=np.float32)
    # A mixture-of-experts matrix with one expert that never saw a token.
    data.sums["blk.0.ffn_down_exps.weight"] = rng.random((4, 32), dtype=np.float32) * 10
    data.sums["blk.0.ffn_down_exps.weight"][2] = 0
    data.counts["blk.0.ffn_down_exps.weight"] = np.array([100, 50, 0, 7], dtype=np.float32)
    return data


def _tiny_config(folder: Path, model: Path, text: Path, extra: str = "", ctx: int = 64, chunks: int = 3) -> Path:
    return write_config(folder, f"""
source:
  path: {model}
target:
  repo: me/tiny
card:
  model_name: tiny
imatrix:
  calibration:
    path: {text}
    name: tiny calibration
  ctx: {ctx}
  chunks: {chunks}
{extra}
variants:
  - name: iq2_xxs
    type: IQ2_XXS
""")


# --- file formats ------------------------------------------------------------------------

def test_values_are_means_with_unseen_experts_at_one():
    data = _random_data()
    v = data.values()
    q = data.sums["blk.0.attn_q.weight"][0] / 3584
    np.testing.assert_allclose(v["blk.0.attn_q.weight"], q, rtol=1e-6)
    moe = v["blk.0.ffn_down_exps.weight"].reshape(4, 32)
    assert moe.shape == (4, 32) and v["blk.0.ffn_down_exps.weight"].dtype == np.float32
    np.testing.assert_array_equal(moe[2], np.ones(32, dtype=np.float32))
    np.testing.assert_allclose(moe[3], data.sums["blk.0.ffn_down_exps.weight"][3] / 7, rtol=1e-6)


def test_gguf_round_trip_keeps_everything(tmp_path):
    data = _random_data()
    write_gguf(data, tmp_path / "m.imatrix.gguf")
    back = read_gguf(tmp_path / "m.imatrix.gguf")
    assert back.datasets == ["some text.txt"] and back.chunk_count == 7 and back.chunk_size == 512
    assert set(back.sums) == set(data.sums)
    for name in data.sums:
        np.testing.assert_array_equal(back.sums[name], data.sums[name])
        np.testing.assert_array_equal(back.counts[name], data.counts[name])
    # llama.cpp's layout: in_sum2 [ne0, n_mat], counts [1, n_mat], general.type = imatrix
    from hubbot.gguf_io.info import open_reader

    r = open_reader(tmp_path / "m.imatrix.gguf")
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}
    assert shapes["blk.0.ffn_down_exps.weight.in_sum2"] == (32, 4)
    assert shapes["blk.0.ffn_down_exps.weight.counts"] == (1, 4)
    assert r.fields["general.type"].contents() == "imatrix"
    assert "general.architecture" not in r.fields


def test_dat_round_trip_keeps_the_means(tmp_path):
    data = _random_data(1)
    write_dat(data, tmp_path / "m.dat")
    back = read_dat(tmp_path / "m.dat")
    assert back.datasets == ["some text.txt"] and back.chunk_count == 7
    a, b = data.values(), back.values()
    assert set(a) == set(b)
    # Legacy files keep one count for all experts; the means survive, unseen experts read as 1.
    np.testing.assert_allclose(b["blk.0.attn_q.weight"], a["blk.0.attn_q.weight"], rtol=1e-5)
    np.testing.assert_allclose(b["blk.0.ffn_down_exps.weight"], a["blk.0.ffn_down_exps.weight"], rtol=1e-5)
    assert read_imatrix(tmp_path / "m.dat").chunk_count == 7  # detected by content


@pytest.mark.parametrize("payload", [b"", b"\x05\x00\x00\x00abc", b"GGUF\x03\x00\x00\x00garbage", b"\xff" * 64])
def test_corrupt_files_give_one_line_errors(tmp_path, payload):
    bad = tmp_path / "bad.imatrix"
    bad.write_bytes(payload)
    with pytest.raises(ImatrixError) as exc:
        read_imatrix(bad)
    assert "\n" not in str(exc.value) and "bad.imatrix" in str(exc.value)


def test_a_model_file_is_not_an_imatrix(tiny_gguf):
    with pytest.raises(ImatrixError, match="not an importance matrix"):
        read_imatrix(tiny_gguf)


def test_truncated_gguf_imatrix_is_refused(tmp_path):
    write_gguf(_random_data(), tmp_path / "full.gguf")
    raw = (tmp_path / "full.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImatrixError, match="cut.gguf"):
        read_imatrix(tmp_path / "cut.gguf")


# --- collection and validation on the tiny model ------------------------------------------

@pytest.fixture(scope="module")
def tiny_matrix(tiny_gguf, calibration_text) -> ImatrixData:
    # Always in a child: llama.cpp's OpenMP threads in this process would deadlock later forks
    # (the quantizer runs in a forked child).
    return collect_isolated(tiny_gguf, calibration_text.read_text(), CollectSettings(ctx=64, chunks=3, threads=2), "cal")


def test_collect_covers_every_matmul_weight(tiny_gguf, tiny_matrix):
    info = read_info(tiny_gguf)
    expected = im.expected_matrices(info)
    assert set(tiny_matrix.sums) == set(expected) and len(expected) == 4 * 7
    for name, v in tiny_matrix.values().items():
        assert v.size == expected[name] and np.all(np.isfinite(v)) and v.min() >= 0
        assert tiny_matrix.counts[name][0] == 3 * 64  # every position of every chunk
    assert tiny_matrix.chunk_count == 3 and tiny_matrix.chunk_size == 64
    im.validate(tiny_matrix, info, "tiny")  # fits its own model


def test_validation_errors(tiny_gguf, tiny_matrix):
    info = read_info(tiny_gguf)
    missing = ImatrixData(sums=dict(tiny_matrix.sums), counts=dict(tiny_matrix.counts))
    del missing.sums["blk.3.ffn_down.weight"]
    with pytest.raises(ImatrixError, match="lacks 1 of the model's 28"):
        im.validate(missing, info, "x")
    wrong = ImatrixData(sums=dict(tiny_matrix.sums), counts=dict(tiny_matrix.counts))
    wrong.sums["blk.0.attn_q.weight"] = np.ones((1, 100), dtype=np.float32)
    with pytest.raises(ImatrixError, match="has 100 values but the model needs 256"):
        im.validate(wrong, info, "x")
    nan = ImatrixData(sums=dict(tiny_matrix.sums), counts=dict(tiny_matrix.counts))
    nan.sums["blk.1.attn_k.weight"] = tiny_matrix.sums["blk.1.attn_k.weight"].copy()
    nan.sums["blk.1.attn_k.weight"][0, 5] = np.nan
    with pytest.raises(ImatrixError, match="non-finite"):
        im.validate(nan, info, "x")


def test_ensure_caches_and_publishes(tmp_path, tiny_gguf, calibration_text, monkeypatch):
    cfg = load_config(_tiny_config(tmp_path, tiny_gguf, calibration_text))
    work, source, _ = prepare(cfg)
    assert im.ensure_imatrix(cfg, source, work, threads=2, compute=False) is None  # plan never computes
    ref = im.ensure_imatrix(cfg, source, work, threads=2)
    assert ref is not None and ref.path == work.out / "tiny.imatrix.gguf" and ref.path.is_file()
    entry = work.manifest.get("tiny.imatrix.gguf")
    assert entry.kind == "imatrix" and entry.sha256 == ref.sha256 and entry.size == ref.path.stat().st_size
    assert entry.calibration == "tiny calibration" and entry.chunks == 3 and entry.ctx == 64
    assert ref.entries == 28 and set(ref.values) == set(im.expected_matrices(source.info))

    def no_compute(*a, **k):
        raise AssertionError("the cached matrix should have been used")

    monkeypatch.setattr(im, "compute_matrix", no_compute)
    again = im.ensure_imatrix(cfg, source, work, threads=2)
    assert again.sha256 == ref.sha256
    assert im.ensure_imatrix(cfg, source, work, threads=2, compute=False).sha256 == ref.sha256
    # A setting that changes the numbers is a new key: it must compute.
    with pytest.raises(AssertionError, match="cached matrix"):
        im.ensure_imatrix(cfg, source, work, threads=2, chunks=2)


def test_short_or_empty_calibration_text(tmp_path, tiny_gguf):
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.")
    cfg = load_config(_tiny_config(tmp_path / "a", tiny_gguf, short))
    work, source, _ = prepare(cfg)
    with pytest.raises(ImatrixError, match=r"tokens, fewer than one chunk of 64"):
        im.ensure_imatrix(cfg, source, work, threads=1)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    cfg = load_config(_tiny_config(tmp_path / "b", tiny_gguf, empty))
    work, source, _ = prepare(cfg)
    with pytest.raises(ImatrixError, match="is empty"):
        im.ensure_imatrix(cfg, source, work, threads=1)


def test_user_file_dat_is_loaded_and_published_as_gguf(tmp_path, tiny_gguf, tiny_matrix):
    write_dat(tiny_matrix, tmp_path / "given.dat")
    cfg = load_config(write_config(tmp_path, f"""
source: {{path: {tiny_gguf}}}
target: {{repo: me/tiny}}
card: {{model_name: tiny}}
imatrix: {{file: given.dat}}
variants: [{{name: iq2_xxs, type: IQ2_XXS}}]
"""))
    work, source, _ = prepare(cfg)
    ref = im.ensure_imatrix(cfg, source, work, threads=1, compute=False)
    assert ref is not None and read_imatrix(ref.path).chunk_count == 3
    for name, v in tiny_matrix.values().items():
        np.testing.assert_allclose(ref.values[name], v, rtol=1e-5)


# --- the real model ------------------------------------------------------------------------

def _gemma_config(folder: Path, model: Path, text: Path, extra: str = "", variants: str = "", chunks: int = 2) -> Path:
    return write_config(folder, f"""
source: {{path: {model}}}
target: {{repo: me/gemma}}
card: {{model_name: gemma-3-270m}}
imatrix:
  calibration: {{path: {text}, name: calibration.txt}}
  ctx: 512
  chunks: {chunks}
{extra}
variants:
{variants or '  - {name: iq2_xxs, type: IQ2_XXS}'}
""")


@pytest.fixture(scope="module")
def gemma_matrix(gemma_bf16, calibration_text, tmp_path_factory) -> Path:
    """hubbot's imatrix of the real model (3 chunks x 512) as a GGUF file."""
    data = collect_isolated(gemma_bf16, calibration_text.read_text(), CollectSettings(ctx=512, chunks=3, threads=2),
                            "calibration.txt")
    path = tmp_path_factory.mktemp("gemma-im") / "hubbot.imatrix.gguf"
    write_gguf(data, path)
    return path


@pytest.fixture(scope="module")
def llama_imatrix_ref(gemma_bf16, calibration_text, tmp_path_factory) -> Path:
    """llama.cpp's own llama-imatrix on the same model, text, ctx and chunks (GGUF output)."""
    from support.llamacpp_tools import llama_tool

    out = tmp_path_factory.mktemp("ref-im") / "llama.imatrix.gguf"
    proc = subprocess.run([str(llama_tool("llama-imatrix")), "-m", str(gemma_bf16), "-f", str(calibration_text),
                           "-o", str(out), "-c", "512", "-b", "512", "--chunks", "3", "--no-ppl", "-t", "2"],
                          check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_parity_with_llama_imatrix(gemma_matrix, llama_imatrix_ref, gemma_bf16):
    ours, ref = read_imatrix(gemma_matrix), read_imatrix(llama_imatrix_ref)
    assert set(ours.sums) == set(ref.sums) and len(ours.sums) == 126
    a, b = ours.values(), ref.values()
    worst = max(float(np.max(np.abs(a[n] - b[n]) / np.maximum(np.abs(b[n]), 1e-12))) for n in a)
    assert worst < 1e-3, worst
    for n in ours.counts:
        np.testing.assert_array_equal(ours.counts[n], ref.counts[n])
    im.validate(ref, read_info(gemma_bf16), "llama.cpp's imatrix")  # llama.cpp's file loads and fits


@pytest.mark.slow
def test_llama_cpp_reads_our_file(gemma_matrix, gemma_bf16, tmp_path):
    """llama-imatrix loads hubbot's GGUF (--in-file) and writes it back unchanged in both formats."""
    from support.llamacpp_tools import llama_tool

    tool = str(llama_tool("llama-imatrix"))
    for name in ("back.gguf", "back.dat"):
        fmt = ["--output-format", "dat"] if name.endswith(".dat") else []
        # -m is required by the tool's argument parser; with no text it only combines the files.
        proc = subprocess.run([tool, "-m", str(gemma_bf16), "--in-file", str(gemma_matrix), "--in-file", str(gemma_matrix),
                               "-o", str(tmp_path / name), *fmt], check=False, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        back, ours = read_imatrix(tmp_path / name).values(), read_imatrix(gemma_matrix).values()
        assert set(back) == set(ours)
        for n in ours:  # merging a file with itself doubles sums and counts: same means
            np.testing.assert_allclose(back[n], ours[n], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ["IQ2_XXS", "IQ1_S"])
def test_lowbit_builds_need_the_matrix(gemma_bf16, gemma_matrix, tmp_path, qtype):
    values = read_imatrix(gemma_matrix).values()
    out = tmp_path / f"{qtype}.gguf"
    report = quantize(gemma_bf16, out, QuantizeSpec(file_type=qtype, threads=2), values)
    assert out.stat().st_size > 0 and report.type_counts.get(qtype, 0) > 0
    assert read_info(out).tensor_types()["blk.5.ffn_down.weight"] == qtype
    with pytest.raises(BuildError, match="imatrix|importance matrix"):
        quantize(gemma_bf16, tmp_path / "no.gguf", QuantizeSpec(file_type=qtype, threads=2), None)


@pytest.mark.slow
def test_build_computes_publishes_and_reuses(gemma_bf16, calibration_text, tmp_path):
    cfg = load_config(_gemma_config(tmp_path, gemma_bf16, calibration_text, chunks=1))
    (res,) = build(cfg, threads=2)
    assert res.status == "built" and res.entry.imatrix.file == "gemma-3-270m.imatrix.gguf"
    info = read_info(cfg.workdir / "out" / res.file)
    assert info.metadata["quantize.imatrix.file"] == "gemma-3-270m.imatrix.gguf"
    assert info.metadata["quantize.imatrix.chunks_count"] == 1
    assert info.metadata["quantize.imatrix.entries_count"] == 126
    again = load_config(cfg.path)  # a fresh load finds the same cached matrix without computing
    work, source, _ = prepare(again)
    assert im.ensure_imatrix(again, source, work, threads=2, compute=False).sha256 == res.entry.imatrix.sha256


@pytest.mark.slow
def test_imatrix_of_another_model_is_refused(gemma_bf16, tiny_gguf, tiny_matrix, tmp_path):
    write_gguf(tiny_matrix, tmp_path / "tiny.imatrix.gguf")
    cfg = load_config(write_config(tmp_path, f"""
source: {{path: {gemma_bf16}}}
target: {{repo: me/gemma}}
imatrix: {{file: tiny.imatrix.gguf}}
variants: [{{name: iq2_xxs, type: IQ2_XXS}}]
"""))
    with pytest.raises(ImatrixError, match="made for another model") as exc:
        build(cfg, threads=1)
    assert "\n" not in str(exc.value)


@pytest.mark.slow
def test_cli_imatrix(gemma_bf16, calibration_text, tmp_path):
    import json

    from click.testing import CliRunner

    from hubbot.cli import main

    path = _gemma_config(tmp_path, gemma_bf16, calibration_text, chunks=1)
    r = CliRunner().invoke(main, ["imatrix", "-c", str(path), "--json", "-o", str(tmp_path / "copy.dat")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["kind"] == "imatrix" and data["chunks"] == 1 and data["entries"] == 126
    assert read_dat(tmp_path / "copy.dat").chunk_count == 1
    r = CliRunner().invoke(main, ["imatrix", "-c", str(path), "--ctx", "16"])
    assert r.exit_code == 2  # click refuses a context under 32
