"""`hubbot build` / `plan` end to end on the real Gemma 3 270M: outputs load and generate,
layer rules land on the intended blocks, unchanged outputs are skipped, failures leave nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import llama_cpp
import pytest
from click.testing import CliRunner
from support.configs import write_config

import hubbot.build.run as build_mod
from hubbot.build.run import build
from hubbot.cli import main
from hubbot.config import load_config
from hubbot.gguf_io.info import read_info

LADDER = """\
source:
  path: {source}
  base_model: google/gemma-3-270m
target:
  repo: someone/gemma-3-270m-GGUF
card:
  model_name: gemma-3-270m
  quantized_by: tester
build:
  threads: 2
variants:
  - name: f16
    type: F16
  - name: q8_0
    type: Q8_0
  - name: q4_k
    type: Q4_K_M
    output: Q8_0
    embeddings: Q8_0
  - name: iq4_xs
    type: IQ4_XS
  - name: layered
    type: Q4_0
    embeddings: Q8_0
    layers:
      - blocks: edges 25%
        roles: [attn_q, attn_k, attn_v, attn_output, ffn_down]
        type: Q8_0
      - blocks: middle 50%
        roles: [ffn_down]
        type: Q5_0
"""


def generate(path: Path) -> str:
    llm = llama_cpp.Llama(str(path), n_ctx=128, n_threads=2, verbose=False, seed=1)
    out = llm("The capital of France is", max_tokens=8, temperature=0.0)
    text = out["choices"][0]["text"]
    del llm
    return text


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, gemma_bf16):
    folder = tmp_path_factory.mktemp("ladder")
    cfg = load_config(write_config(folder, LADDER.format(source=gemma_bf16)))
    results = build(cfg)
    return cfg, results


@pytest.mark.slow
def test_every_variant_builds_loads_and_generates(ladder):
    cfg, results = ladder
    assert [r.status for r in results] == ["built"] * 5
    manifest = json.loads((cfg.workdir / "manifest.json").read_text())["outputs"]
    for r in results:
        path = cfg.workdir / "out" / r.file
        assert path.is_file() and path.stat().st_size == manifest[r.file]["size"]
        assert r.file.startswith("gemma-3-270m-")
        entry = manifest[r.file]
        assert entry["tensor_types"] == read_info(path).type_counts
        assert entry["engine"]["ggml_commit"] and entry["source"]["sha256"]
        assert len(entry["sha256"]) == 64 and entry["input_key"]
        text = generate(path)
        assert len(text.strip()) > 0, r.file
    # Full-precision copy keeps every 2-D weight in F16; the Q8_0 body keeps Q8_0 embeddings.
    f16 = read_info(cfg.workdir / "out" / "gemma-3-270m-f16.gguf")
    assert set(f16.type_counts) == {"F16", "F32"}
    q4 = read_info(cfg.workdir / "out" / "gemma-3-270m-q4_k.gguf").tensor_types()
    assert q4["token_embd.weight"] == "Q8_0"
    meta = read_info(cfg.workdir / "out" / "gemma-3-270m-q4_k.gguf").metadata
    assert meta["general.quantized_by"] == "tester"
    assert meta["hubbot.source.repo"] == "google/gemma-3-270m"


@pytest.mark.slow
def test_layer_rules_put_the_intended_type_on_each_block(ladder):
    cfg, _ = ladder
    types = read_info(cfg.workdir / "out" / "gemma-3-270m-layered.gguf").tensor_types()
    edges = [0, 1, 2, 3, 4, 13, 14, 15, 16, 17]
    for block in range(18):
        for role in ("attn_q", "attn_k", "attn_v", "attn_output"):
            want = "Q8_0" if block in edges else "Q4_0"
            assert types[f"blk.{block}.{role}.weight"] == want, (block, role)
        want_down = "Q8_0" if block in edges else "Q5_0"
        assert types[f"blk.{block}.ffn_down.weight"] == want_down, block
        assert types[f"blk.{block}.ffn_gate.weight"] == "Q4_0"
    assert types["token_embd.weight"] == "Q8_0"


@pytest.mark.slow
def test_plan_json_matches_the_built_files(ladder):
    cfg, _ = ladder
    result = CliRunner().invoke(main, ["plan", "--json", "-c", str(cfg.path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_name = {v["name"]: v for v in data["variants"]}
    for name, v in by_name.items():
        path = cfg.workdir / "out" / v["file"]
        assert v["up_to_date"] is True
        assert v["tensor_types"] == read_info(path).type_counts
        # The plan's size is exact up to alignment padding.
        assert abs(v["size"] - path.stat().st_size) < 64 * 1024, name
    manifest = json.loads((cfg.workdir / "manifest.json").read_text())["outputs"]
    # The dry run reports the same shape fallbacks the real build logged (640-column tensors).
    assert by_name["q4_k"]["fallbacks"] == len(manifest["gemma-3-270m-q4_k.gguf"]["fallbacks"]) > 0
    assert by_name["layered"]["standard_size"] < by_name["layered"]["size"]
    assert by_name["layered"]["blocks"]["ffn_down"]["0"] == "Q8_0"
    assert data["matrix"]["include"][0] == {"variant": "f16", "file": "gemma-3-270m-f16.gguf"}


@pytest.mark.slow
def test_second_build_does_no_work_and_one_changed_recipe_rebuilds_only_it(ladder, monkeypatch):
    cfg, _ = ladder
    calls = []
    real = build_mod.quantize
    monkeypatch.setattr(build_mod, "quantize", lambda *a, **k: calls.append(a[2].file_type) or real(*a, **k))
    mtimes = {p.name: p.stat().st_mtime_ns for p in (cfg.workdir / "out").glob("*.gguf")}
    again = build(cfg)
    assert [r.status for r in again] == ["unchanged"] * 5 and calls == []
    changed = cfg.path.read_text().replace("  - name: iq4_xs\n    type: IQ4_XS\n", "  - name: iq4_xs\n    type: IQ4_XS\n    output: Q8_0\n")
    cfg.path.write_text(changed)
    cfg2 = load_config(cfg.path)
    results = {r.name: r.status for r in build(cfg2)}
    assert results == {"f16": "unchanged", "q8_0": "unchanged", "q4_k": "unchanged", "iq4_xs": "built", "layered": "unchanged"}
    assert calls == ["IQ4_XS"]
    for p in (cfg.workdir / "out").glob("*.gguf"):
        if p.name != "gemma-3-270m-iq4_xs.gguf":
            assert p.stat().st_mtime_ns == mtimes[p.name]
    cfg.path.write_text(LADDER.format(source=cfg.source.path))


def test_killed_build_leaves_no_complete_looking_file_and_rerun_completes(tmp_path, gemma_bf16):
    text = LADDER.format(source=gemma_bf16).split("variants:")[0] + "variants:\n  - name: q4_k\n    type: Q4_K_M\n"
    path = write_config(tmp_path, text)
    out = tmp_path / ".hubbot" / "out"
    proc = subprocess.Popen([sys.executable, "-m", "hubbot", "build", "-c", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".*.partial")):
        time.sleep(0.05)
    assert list(out.glob(".*.partial")), "the build never started writing"
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "gemma-3-270m-q4_k.gguf").exists()
    manifest = tmp_path / ".hubbot" / "manifest.json"
    assert not manifest.exists() or "gemma-3-270m-q4_k.gguf" not in manifest.read_text()
    result = CliRunner().invoke(main, ["build", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert (out / "gemma-3-270m-q4_k.gguf").is_file()
    assert not list(out.glob(".*.partial"))  # the leftover was cleaned up


def test_full_disk_is_a_one_line_error_with_nothing_written(tmp_path, tiny_gguf, monkeypatch):
    import shutil

    path = write_config(tmp_path, f"source:\n  path: {tiny_gguf}\ntarget:\n  repo: a/b\nvariants:\n  - name: q8_0\n    type: Q8_0\n")
    out = tmp_path / ".hubbot" / "out"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    result = CliRunner().invoke(main, ["build", "-c", str(path)])
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "not enough disk space for building tiny-f16-q8_0.gguf" in errors[0]
    assert "Traceback" not in result.output
    assert list(out.iterdir()) == []
