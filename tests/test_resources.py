"""The resource plan: the sparse 27B stand-in, exact sizes against llama.cpp, shard layout, per-job
figures from the inventory, and the guard a release job runs before it downloads anything."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.configs import write_config
from support.hub import USER
from support.paths import REPO_ROOT, TEST_CACHE

from hubbot.build import throughput as tp
from hubbot.build.jobs import JobEstimate
from hubbot.build.resources import Item, ModelShape, inference_memory, quantize_memory, shard_layout
from hubbot.build.runners import RunnerTooSmallError, check_machine
from hubbot.cli import main
from hubbot.gguf_io.info import open_reader, read_info
from hubbot.gguf_io.shard import split_gguf
from hubbot.testing.standin import GEMMA3_27B, disk_usage, gemma3_inventory, write_standin

GB = 10**9


@pytest.fixture(scope="session")
def standin(gemma_bf16) -> Path:
    """The sparse Gemma 3 27B stand-in (real Gemma 3 vocabulary), kept across sessions."""
    path = TEST_CACHE / "standin" / "medgemma-27b-bf16.gguf"
    if not path.exists():
        write_standin(path, tokenizer_from=gemma_bf16)
    return path


@pytest.fixture(scope="session")
def standin_hashes(standin) -> Path:
    """hubbot's source-hash cache with the stand-in's sha256, computed once per machine (54 GB of zeros)."""
    from hubbot.source.resolve import HashCache

    cache = HashCache(TEST_CACHE / "standin" / "hashes.json")
    cache.sha256(standin)
    return cache.path


def root_ladder_config(folder: Path, standin: Path, hashes: Path, extra_variants: str = "") -> Path:
    """The root variants.yaml with the stand-in as its source (text paths made absolute)."""
    text = (REPO_ROOT / "variants.yaml").read_text() + extra_variants  # the ladder is the file's last section
    text = re.sub(r"(?m)^  repo: google/medgemma-27b-text-it.*$", f"  path: {standin}\n  base_model: google/medgemma-27b-text-it", text)
    text = re.sub(r"(?m)^  revision: main.*\n", "", text)
    text = text.replace("path: examples/data", f"path: {REPO_ROOT}/examples/data")
    path = write_config(folder, text)
    (folder / ".hubbot" / "cache").mkdir(parents=True)
    shutil.copyfile(hashes, folder / ".hubbot" / "cache" / "hashes.json")
    return path


# --- the stand-in ---------------------------------------------------------------------------------

def test_standin_has_gemma3_27b_inventory_and_takes_no_disk(standin):
    info = read_info(standin)
    assert info.architecture == "gemma3" and info.block_count == 62
    assert len(info.tensors) == 2 + 62 * 13
    shapes = {t.name: (t.shape, t.type) for t in info.tensors}
    assert shapes["token_embd.weight"] == ((5376, 262144), "BF16")
    assert shapes["blk.0.attn_q.weight"] == ((5376, 4096), "BF16")
    assert shapes["blk.61.attn_k.weight"] == ((5376, 2048), "BF16")
    assert shapes["blk.61.attn_v.weight"] == ((5376, 2048), "BF16")
    assert shapes["blk.7.attn_output.weight"] == ((4096, 5376), "BF16")
    assert shapes["blk.3.ffn_gate.weight"] == shapes["blk.3.ffn_up.weight"] == ((5376, 21504), "BF16")
    assert shapes["blk.3.ffn_down.weight"] == ((21504, 5376), "BF16")
    assert shapes["blk.0.attn_q_norm.weight"] == ((128,), "F32") == shapes["blk.0.attn_k_norm.weight"]
    for norm in ("attn_norm", "ffn_norm", "post_attention_norm", "post_ffw_norm"):
        assert shapes[f"blk.9.{norm}.weight"] == ((5376,), "F32")
    assert "output.weight" not in shapes  # tied to the embedding
    assert info.metadata["gemma3.attention.head_count"] == 32
    assert info.metadata["gemma3.attention.head_count_kv"] == 16
    assert info.metadata["gemma3.attention.key_length"] == 128
    assert info.metadata["tokenizer.ggml.model"] == "llama"
    assert len(open_reader(standin).fields["tokenizer.ggml.tokens"].data) == 262144
    assert info.n_params == 27_009_002_240
    assert standin.stat().st_size > 54 * GB
    assert disk_usage(standin) < 50 * 10**6  # the header only: the data section is a hole


def test_inventory_matches_the_hyperparameters():
    inv = gemma3_inventory(GEMMA3_27B)
    per_block = 5376 * 4096 * 2 + 5376 * 2048 * 2 + 3 * 5376 * 21504 + 128 * 2 + 5376 * 4
    assert sum(math.prod(s) for _, s, _ in inv) == 62 * per_block + 5376 * 262144 + 5376


def test_llama_cpp_dry_run_reads_no_weights(standin, tmp_path):
    from hubbot.llama.quantize import QuantizeSpec, quantize

    start = time.perf_counter()
    report = quantize(standin, tmp_path / "out.gguf", QuantizeSpec(file_type="Q4_K_M", threads=1), dry_run=True)
    assert len(report.tensors) == 808 and report.type_counts["Q4_K"] > 300
    assert report.peak_rss < 500 * 10**6  # reading 54 GB of weights would show here
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "out.gguf").exists()


# --- plan on the stand-in against llama.cpp's own dry run ------------------------------------------

_DIRECT = r"""
import ctypes, json, re, sys
import llama_cpp
from hubbot.llama.quantize import QuantizeSpec, build_params
from hubbot.config import recipes
src, spec_json = sys.argv[1], json.loads(sys.argv[2])
spec = QuantizeSpec(file_type=spec_json["file_type"], output_type=spec_json["output_type"],
                    embeddings_type=spec_json["embeddings_type"],
                    overrides=tuple(recipes.TensorOverride(p, t) for p, t in spec_json["overrides"]))
imatrix = None
if spec_json["imatrix"]:
    import numpy as np
    from hubbot.gguf_io.info import open_reader, read_info
    imatrix = {t.name: np.ones(t.shape[0], np.float32) for t in read_info(src).tensors
               if t.name.startswith("blk.") and len(t.shape) == 2}
params, keep = build_params(spec, imatrix, dry_run=True)
lines = []
@llama_cpp.llama_log_callback
def on_log(level, text, user):
    lines.append(text.decode())
llama_cpp.llama_log_set(on_log, None)
assert llama_cpp.llama_model_quantize(src.encode(), b"/nonexistent/out.gguf", ctypes.byref(params)) == 0
print(re.search(r"quant size\s*=\s*([\d.]+) MiB", "".join(lines)).group(1))
"""


@pytest.mark.slow
def test_plan_on_the_standin_matches_llama_cpps_dry_run(tmp_path, standin, standin_hashes):
    # The root ladder's 1-2 bit files are recipe: auto; one layer recipe beside them shows its table.
    cfg = root_ladder_config(tmp_path / "p", standin, standin_hashes,
                             extra_variants="  - name: dynamic-iq2_xxs\n    recipe: dynamic-iq2_xxs\n")
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["plan", "--json", "-c", str(cfg)])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert seconds < 600  # a few seconds per variant even on a loaded 2-core machine
    header = standin.stat().st_size - read_info(standin).tensor_bytes
    assert len(data["variants"]) == 17
    for v in data["variants"]:
        auto = v["budget"] is not None  # recipe: auto before its sensitivity exists: sized by its budget
        recipe = {"file_type": v["type"], "output_type": v["output"], "embeddings_type": v["embeddings"],
                  "imatrix": v["needs_imatrix"], "overrides": [] if auto else _overrides(cfg, v["name"], standin)}
        direct = subprocess.run([sys.executable, "-c", _DIRECT, str(standin), json.dumps(recipe)],
                                capture_output=True, text=True, check=True).stdout.strip()
        # llama.cpp prints MiB with two decimals: agree to that precision. A `like:` budget is the
        # standard mix's size with the header hubbot writes (its metadata adds under 1 KB).
        size = v["budget"] if auto else v["size"]
        assert abs((size - header) / 2**20 - float(direct)) <= 0.006, v["name"]
    text = CliRunner().invoke(main, ["plan", "-c", str(cfg)]).output
    for v in data["variants"]:
        assert v["file"] in text
    assert "ffn_down" in text and "IQ1_S" in text  # the layer-adaptive per-block tables
    for name in ("convert", "imatrix", "build:q4_k", "build:iq1_s", "card"):
        assert re.search(rf"(?m)^  {re.escape(name)}\s+\d", text), name
    shards = {v["name"]: v["shards"] for v in data["variants"] if v["shards"]}
    assert set(shards) == {"bf16", "f16"}
    for files in shards.values():
        assert [s["file"][-20:] for s in files] == ["-00001-of-00002.gguf", "-00002-of-00002.gguf"]
        assert all(s["bytes"] < 50 * GB for s in files)
        assert abs(sum(s["bytes"] for s in files) - data["variants"][0]["size"]) < 10**6


def _overrides(cfg_path: Path, name: str, standin: Path) -> list:
    """The compiled tensor overrides of variant ``name`` (what hubbot passes to llama.cpp)."""
    from hubbot.build.spec import make_spec
    from hubbot.config import load_config
    from hubbot.source.resolve import ResolvedSource

    cfg = load_config(cfg_path)
    src = ResolvedSource(standin, "0" * 64, "local", "stand-in", info=read_info(standin))
    spec = make_spec(cfg, cfg.variant(name), src, None, 1)
    return [[o.pattern, o.type] for o in spec.overrides]


# --- shard layout against a real split --------------------------------------------------------------

def test_shard_layout_predicts_the_real_split(gemma_bf16, tmp_path):
    info = read_info(gemma_bf16)
    shape = ModelShape.from_info(info, gemma_bf16.stat().st_size)
    predicted = shard_layout(shape, {}, gemma_bf16.name, 150 * 10**6)
    written = split_gguf(gemma_bf16, tmp_path, 150 * 10**6)
    assert [s["file"] for s in predicted] == [p.name for p in written]
    for s, p in zip(predicted, written):
        assert s["tensors"] == len(open_reader(p).tensors)
        assert abs(s["bytes"] - p.stat().st_size) < 64 * 1024, (s, p.stat().st_size)


# --- figures that follow from the inventory -------------------------------------------------------

@pytest.fixture(scope="module")
def shape27(standin) -> ModelShape:
    return ModelShape.from_info(read_info(standin), standin.stat().st_size)


def test_shape_and_artifact_sizes_by_hand(shape27):
    assert (shape27.n_layer, shape27.n_embd, shape27.n_vocab, shape27.n_head_kv, shape27.head_k) == (62, 5376, 262144, 16, 128)
    assert shape27.matmul_params == 62 * (5376 * 4096 * 2 + 5376 * 2048 * 2 + 3 * 5376 * 21504) + 5376 * 262144
    # Importance matrix: ne0 of every block matmul weight as F32 (+ counts and names).
    ne0_sum = 62 * (5376 * 5 + 4096 + 21504)
    assert ne0_sum * 4 <= shape27.imatrix_bytes() <= ne0_sum * 4 + 62 * 7 * 200 + 2048


def test_inference_memory_by_hand(shape27):
    items = {i.what: i.bytes for i in inference_memory(shape27, 54 * GB, ctx=512, n_seq=4, n_outputs=4 * 255)}
    assert items["model weights (memory-mapped)"] == 54 * GB
    assert items["KV cache (F16)"] == 62 * 2048 * 16 * (128 + 128) * 2  # 1.04 GB
    assert items["logits buffer"] == 262144 * 1020 * 4  # 1.07 GB


def test_quantizer_memory_by_hand(shape27):
    types = {t.name: ("Q8_0" if len(t.shape) == 2 else t.type) for t in shape27.tensors}
    items = {i.what: i.bytes for i in quantize_memory(shape27, types, imatrix=False)}
    # The embedding is the largest tensor: 5376 x 262144 BF16, converted in slabs under 8 GiB.
    assert items["largest source tensor (memory-mapped)"] == 5376 * 262144 * 2
    per_row = 5376 * 2 + 5376 // 32 * 34 + 5376 * 4
    slab = (8 << 30) // per_row
    assert items["F32 expansion buffer"] == slab * 5376 * 4
    assert items["quantized output buffer"] == slab * (5376 // 32 * 34)


@pytest.mark.slow
def test_job_table_follows_from_the_variant_sizes(tmp_path, standin, standin_hashes):
    cfg = root_ladder_config(tmp_path / "p", standin, standin_hashes)
    data = json.loads(CliRunner().invoke(main, ["plan", "--json", "-c", str(cfg)]).output)
    sizes = {v["name"]: v for v in data["variants"]}
    jobs = {j["name"]: j for j in data["resources"]["jobs"]}
    assert list(jobs)[:2] == ["convert", "imatrix"] and list(jobs)[-1] == "card"
    # The staged float variant's job builds nothing: it fetches the file the convert job pushed.
    assert len(jobs) == 2 + 16 + 1 and jobs["build:bf16"]["upload"] == 0
    assert "medgemma-27b-text-it-bf16.gguf (staged copy)" in [i["what"] for i in jobs["build:bf16"]["disk_items"]]
    staged = sum(s["bytes"] for s in sizes["bf16"]["shards"])
    art = data["resources"]["artifacts"]
    # convert (local GGUF source): the staged bf16 and its shards.
    assert jobs["convert"]["disk"] == sizes["bf16"]["size"] + staged
    q4 = jobs["build:q4_k"]
    assert q4["disk"] == staged + art["imatrix"] + art["reference"] + sizes["q4_k"]["size"]
    assert q4["memory"] >= sizes["q4_k"]["size"] and jobs["imatrix"]["memory"] >= staged
    assert jobs["build:q8_0"]["disk"] == staged + art["reference"] + sizes["q8_0"]["size"]  # imatrix: off
    f16_shards = sum(s["bytes"] for s in sizes["f16"]["shards"])
    assert jobs["build:f16"]["disk"] == staged + art["reference"] + sizes["f16"]["size"] + f16_shards
    # 27B passes do not fit the standard runner; nothing here needs more than a 64-core larger runner.
    assert jobs["imatrix"]["runner"] != "standard" and jobs["card"]["runner"] == "standard"


# --- the guard a job runs first -------------------------------------------------------------------

def _job(disk: int, memory: int) -> JobEstimate:
    return JobEstimate("build:q4_k", "build", "q4_k", [Item("staged", disk, "hf-cache")],
                       [Item("model", memory, "ram")], "bench q4_k")


def test_check_machine_says_what_is_missing_and_where_to_run(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    places = {"hf-cache": tmp_path, "workdir": tmp_path}
    assert check_machine(_job(1000, 1000), places, memory=10**9)["ok"]
    with pytest.raises(RunnerTooSmallError) as err:
        check_machine(_job(free + 10 * GB, 20 * GB), places, memory=16 * GB)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("job build:q4_k needs ")
    assert "of disk under" in msg and "20.00 GB of memory (16.00 GB available)" in msg
    assert "larger" in msg or "self-hosted" in msg
    with pytest.raises(RunnerTooSmallError, match="self-hosted"):
        check_machine(_job(10**15, 10**13), places, memory=16 * GB)


def _tiny_plan(tmp_path: Path, tiny_gguf: Path) -> tuple[Path, Path]:
    cfg = write_config(tmp_path / "p", f"source:\n  path: {tiny_gguf}\ntarget:\n  repo: {USER}/tiny-GGUF\n"
                       "variants:\n  - {name: f16, type: F16}\n  - {name: q8_0, type: Q8_0}\n")
    result = CliRunner().invoke(main, ["plan", "--json", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    plan = tmp_path / "plan.json"
    plan.write_text(result.output)
    return cfg, plan


def test_check_job_cli_ok_and_too_small(tmp_path, tiny_gguf):
    cfg, plan = _tiny_plan(tmp_path, tiny_gguf)
    ok = CliRunner().invoke(main, ["plan", "-c", str(cfg), "--check-job", "build", "--only", "q8_0", "--plan-file", str(plan)])
    assert ok.exit_code == 0 and ok.output.startswith("ok: job build:q8_0 needs ")
    data = json.loads(plan.read_text())
    row = next(j for j in data["resources"]["jobs"] if j["name"] == "build:q8_0")
    row["disk_items"][0]["bytes"] = 10**18  # a staged source no machine holds
    plan.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "hubbot", "plan", "-c", str(cfg), "--check-job", "build:q8_0",
                           "--plan-file", str(plan)], capture_output=True, text=True)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: job build:q8_0 needs 1000000.00 TB of disk")
    assert "self-hosted machine" in proc.stderr and "Traceback" not in proc.stderr


def test_check_job_bad_input_is_one_line(tmp_path, tiny_gguf):
    cfg, plan = _tiny_plan(tmp_path, tiny_gguf)
    for args, expected in (
        (["--check-job", "build", "--plan-file", str(plan)], "exactly one --only VARIANT"),
        (["--check-job", "quantize", "--plan-file", str(plan)], "unknown job 'quantize'"),
        (["--check-job", "build:nope", "--plan-file", str(plan)], "the plan has no job 'build:nope'"),
    ):
        result = CliRunner().invoke(main, ["plan", "-c", str(cfg), *args])
        assert result.exit_code == 1 and expected in result.output, result.output
    other = write_config(tmp_path / "o", (tmp_path / "p" / "variants.yaml").read_text().replace("tiny-GGUF", "other-GGUF"))
    result = CliRunner().invoke(main, ["plan", "-c", str(other), "--check-job", "card", "--plan-file", str(plan)])
    assert result.exit_code == 1 and "not hubbot-test/other-GGUF" in result.output


def _safetensors(path: Path, tensors: dict[str, list[int]]) -> None:
    """A safetensors file with BF16 tensors of these shapes (zeros), written by hand."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)


def test_convert_job_of_a_hub_checkpoint_is_checked_without_downloading(tmp_path, local_hub, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_ENDPOINT", local_hub.endpoint)
    repo = f"{USER}/ckpt"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    _safetensors(folder / "model.safetensors", {"model.embed_tokens.weight": [3000, 256],
                                                "model.layers.0.mlp.up_proj.weight": [512, 256],
                                                "model.norm.weight": [256]})
    api = HfApi(endpoint=local_hub.endpoint)
    api.create_repo(repo)
    api.upload_folder(repo_id=repo, folder_path=folder)
    cfg = write_config(tmp_path / "p", f"source:\n  repo: {repo}\ntarget:\n  repo: {USER}/ckpt-GGUF\n"
                       "variants:\n  - {name: bf16, type: BF16}\n  - {name: q8_0, type: Q8_0}\n")
    result = CliRunner().invoke(main, ["plan", "-c", str(cfg), "--check-job", "convert", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    fetched = sum(p.stat().st_size for p in folder.iterdir())
    gguf_bytes = (3000 * 256 + 512 * 256) * 2 + 256 * 4 + (16 << 20)  # 2-D BF16, norms F32, metadata
    # Hub cache copy + converter venv + converted GGUF + the staged bf16 variant, and nothing downloaded.
    assert data["need_disk"] == fetched + int(tp.CONVERTER_VENV.value) + 2 * gguf_bytes
    import os

    assert not list(Path(os.environ["HF_HOME"]).rglob("*.safetensors"))
    result = CliRunner().invoke(main, ["plan", "-c", str(cfg), "--check-job", "imatrix"])
    assert result.exit_code == 1 and "--plan-file" in result.output


def test_rebuilt_reference_mode_adds_the_float_variant_to_later_jobs(tmp_path, tiny_gguf):
    from hubbot.build.plan import plan_project
    from hubbot.config import load_config

    cfg = load_config(write_config(tmp_path / "p", f"source:\n  path: {tiny_gguf}\ntarget:\n  repo: {USER}/tiny-GGUF\n"
                                   "variants:\n  - {name: f16, type: F16}\n  - {name: q8_0, type: Q8_0}\n"))
    flow = {j["name"]: j for j in plan_project(cfg, threads=1)["resources"]["jobs"]}
    today = {j["name"]: j for j in plan_project(cfg, threads=1, reference="rebuilt")["resources"]["jobs"]}
    f16 = tiny_gguf.stat().st_size  # the staged F16 copy of an F16 source: same tensors, same header
    assert abs(today["build:q8_0"]["disk"] - flow["build:q8_0"]["disk"] - f16) < 64 * 1024
    assert abs(today["imatrix"]["disk"] - flow["imatrix"]["disk"] - f16) < 64 * 1024
    assert today["convert"]["disk"] == flow["convert"]["disk"]


def test_card_job_estimate_holds_what_the_card_job_writes(tmp_path, local_hub, tiny_gguf, evaluation_text):
    # The card job's folder holds the merged manifest and bench results, README.md, the chart and the
    # records file hubbot-results.json; its estimate must meet the release's 1.5x bar either way.
    from support.hub import tiny_ladder_yaml

    from hubbot.build.jobs import fallback_count
    from hubbot.build.resources import VariantFacts
    from hubbot.config import load_config
    from hubbot.testing.standin import disk_usage

    variants = "".join(f"  - name: {n}\n    type: {t}\n" for n, t in
                       (("q8_0", "Q8_0"), ("q6_k", "Q6_K"), ("q5_k_m", "Q5_K_M"), ("q4_k_m", "Q4_K_M"), ("q4_0", "Q4_0")))
    bench = f"benchmark:\n  text:\n    path: {evaluation_text}\n  ctx: 64\n  chunks: 2\n  speed: false\n"
    text = tiny_ladder_yaml(tiny_gguf, repo=f"{USER}/tiny-card-size-GGUF", variants=variants, extra=bench)
    env = {"HF_ENDPOINT": local_hub.endpoint, "HUBBOT_NO_PROGRESS": "1"}
    built = write_config(tmp_path / "build", text)

    def ok(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.stdout

    names = [a for n in ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0") for a in ("--only", n)]
    ok("publish", "-c", str(built), *names, "--no-card")
    ok("ci", "export", "-c", str(built), *names, "-o", str(tmp_path / "results"))
    plan = json.loads(ok("plan", "-c", str(built), "--json"))
    card = write_config(tmp_path / "card", text)
    ok("merge", "-c", str(card), str(tmp_path / "results"))
    ok("publish", "-c", str(card), "--card-only")
    out = load_config(card).workdir / "out"
    assert (out / "README.md").is_file() and (out / "hubbot-results.json").is_file()
    measured = sum(disk_usage(p) for p in card.parent.rglob("*") if p.is_file())
    estimate = plan["resources"]["jobs"][-1]
    assert estimate["name"] == "card"
    assert 1 / 1.5 <= estimate["disk"] / measured <= 1.5, (estimate["disk"], measured)
    # Per variant the entry and the record list every fallback tensor: the plan counts them from the shapes.
    shape = ModelShape.from_info(read_info(tiny_gguf), tiny_gguf.stat().st_size)
    manifest = json.loads((load_config(card).workdir / "manifest.json").read_text())["outputs"]
    for v in plan["variants"]:
        recorded = len(manifest[v["file"]].get("fallbacks") or {})
        assert fallback_count(shape, VariantFacts(v["name"], v["file"], v["type"], 0, False)) == recorded, v["name"]


def test_card_estimate_counts_the_shape_fallbacks_llama_cpp_reports(tmp_path, gemma_bf16):
    # Gemma 3 270M's 640-wide rows do not split into 256-value blocks: every K- and IQ-quant lists 90
    # fallback tensors in its manifest entry and its record, which the card job's estimate must hold.
    from hubbot.build.jobs import CARD_BASE_BYTES, CARD_FALLBACK_BYTES, CARD_VARIANT_BYTES, fallback_count
    from hubbot.build.plan import plan_project
    from hubbot.build.resources import VariantFacts
    from hubbot.config import load_config

    types = ("Q8_0", "Q4_K_M", "IQ4_XS", "Q4_0", "IQ3_M")
    ladder = "".join(f"  - {{name: {t.lower()}, type: {t}}}\n" for t in types)
    cfg = load_config(write_config(tmp_path / "p", f"source:\n  path: {gemma_bf16}\ntarget:\n  repo: {USER}/g-GGUF\n"
                                   f"variants:\n{ladder}"))
    plan = plan_project(cfg, threads=1)
    shape = ModelShape.from_info(read_info(gemma_bf16), gemma_bf16.stat().st_size)
    counts = {v["name"]: fallback_count(shape, VariantFacts(v["name"], v["file"], v["type"], 0, False))
              for v in plan["variants"]}
    # The block tensors only: llama.cpp's own choice for the output tensor may add one more.
    assert all(abs(counts[v["name"]] - v["fallbacks"]) <= 1 for v in plan["variants"]), (counts, plan["variants"])
    assert counts["q4_k_m"] == 90 and counts["q8_0"] == 0
    card = plan["resources"]["jobs"][-1]
    assert card["disk"] == (CARD_BASE_BYTES + len(types) * CARD_VARIANT_BYTES + CARD_FALLBACK_BYTES * sum(counts.values()))
