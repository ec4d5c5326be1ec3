"""The release workflow played locally: convert → imatrix → one job per variant → card, on the real Gemma 270M.

Every job runs the commands its step in .github/workflows/release.yml runs, in its own folder,
HOME, temp folder and Hub cache, in its own process, against the local Hub server; jobs share only
what the workflow's artifacts carry (staged.json, plan.json, the importance matrix, the reference
distributions, the results) and the staged source on the Hub. The result must equal a single-machine ``hubbot publish`` of the same ladder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.hub import USER, WRITE_TOKEN

pytestmark = pytest.mark.slow

MATRIX_REPO = f"{USER}/gemma-matrix-GGUF"
SINGLE_REPO = f"{USER}/gemma-single-GGUF"


def ladder_yaml(source: Path, calibration: Path, evaluation: Path, repo: str) -> str:
    # Speed figures differ run to run; everything else a card shows must come out identical.
    return f"""\
source:
  path: {source}
target:
  repo: {repo}
  gated: false
card:
  model_name: gemma-3-270m
imatrix:
  calibration:
    path: {calibration}
    name: hubbot calibration excerpts
  ctx: 128
  chunks: 4
benchmark:
  text:
    path: {evaluation}
    name: hubbot evaluation excerpts
  ctx: 128
  chunks: 4
  speed: false
build:
  threads: 2
variants:
  - name: q8_0
    type: Q8_0
    imatrix: off
  - name: q4_k_m
    type: Q4_K_M
  - name: q4_0
    type: Q4_0
"""


def hubbot(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """One workflow step: ``hubbot ARGS`` in a fresh process; fails the test with its stderr."""
    proc = subprocess.run([sys.executable, "-m", "hubbot", *args], cwd=cwd, env=env, capture_output=True, check=False,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"hubbot {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def new_job(root: Path, name: str, yaml_text: str, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A fresh checkout for one job: its own folder, config, work directory, HOME, temp and Hub cache."""
    folder = root / "jobs" / name
    home = root / "homes" / name
    for d in (folder, home / "hf"):
        d.mkdir(parents=True)
    (folder / "variants.yaml").write_text(yaml_text)
    # A short temp path: llama.cpp's child process talks over a Unix socket there (108-byte limit).
    tmp = tempfile.mkdtemp(prefix="hubbot-job-")
    job_env = {**env, "HOME": str(home), "TMPDIR": tmp, "HF_HOME": str(home / "hf")}
    return folder, job_env


def test_matrix_release_equals_single_machine_publish(tmp_path, local_hub, gemma_bf16, calibration_text,  # noqa: F811
                                                      evaluation_text):
    source = gemma_bf16
    env = {**os.environ, "HF_ENDPOINT": local_hub.endpoint, "HF_TOKEN": WRITE_TOKEN, "HF_HUB_DISABLE_XET": "1"}
    matrix_yaml = ladder_yaml(source, calibration_text, evaluation_text, MATRIX_REPO)
    artifacts = tmp_path / "artifacts"

    # convert job: stage the source on the Hub once, pinned by commit; the matrix and the plan.
    plan_dir, job_env = new_job(tmp_path, "convert", matrix_yaml, env)
    hubbot(["plan", "-c", "variants.yaml", "--check-job", "convert"], plan_dir, job_env)
    hubbot(["stage", "push", "-c", "variants.yaml", "-o", str(artifacts / "plan" / "staged.json")], plan_dir, job_env)
    plan = json.loads(hubbot(["plan", "-c", "variants.yaml", "--json"], plan_dir, job_env).stdout)
    (artifacts / "plan" / "plan.json").write_text(json.dumps(plan))
    gh_output = plan_dir / "github_output"
    hubbot(["ci", "matrix", "-c", "variants.yaml", "--only", "", "--github-output", str(gh_output)], plan_dir, job_env)
    outputs = dict(line.split("=", 1) for line in gh_output.read_text().splitlines())
    matrix = json.loads(outputs["matrix"])
    assert [(e["variant"], e["file"]) for e in matrix["include"]] == \
        [(e["variant"], e["file"]) for e in plan["matrix"]["include"]]
    assert [e["imatrix"] for e in matrix["include"]] == [False, True, True]
    assert outputs["imatrix"] == "true" and outputs["target"] == MATRIX_REPO
    staged = json.loads((artifacts / "plan" / "staged.json").read_text())
    assert staged["branch"] == "hubbot-staging"  # this ladder has no float variant
    plan_file = str(artifacts / "plan" / "plan.json")

    def fetch(job: Path, name: str, job_env: dict[str, str]) -> None:
        hubbot(["plan", "-c", "variants.yaml", "--check-job", name.split(":")[0], "--plan-file", plan_file]
               + (["--only", name.split(":")[1]] if ":" in name else []), job, job_env)
        hubbot(["stage", "fetch", "-c", "variants.yaml", "--staged", str(artifacts / "plan" / "staged.json"),
                "--job", name], job, job_env)

    # imatrix job: the importance matrix and the reference distributions, once; both are artifacts.
    im_dir, job_env = new_job(tmp_path, "imatrix", matrix_yaml, env)
    fetch(im_dir, "imatrix", job_env)
    hubbot(["imatrix", "-c", "variants.yaml", "--json"], im_dir, job_env)
    hubbot(["bench", "-c", "variants.yaml", "--reference-only"], im_dir, job_env)
    shutil.copytree(im_dir / outputs["workdir"] / "cache" / "imatrix", artifacts / "imatrix")
    shutil.copytree(im_dir / outputs["workdir"] / "cache" / "bench-reference", artifacts / "bench-reference")

    # build jobs, one per matrix entry.
    for entry in matrix["include"]:
        name = entry["variant"]
        job, job_env = new_job(tmp_path, f"build-{name}", matrix_yaml, env)
        fetch(job, f"build:{name}", job_env)
        if entry["imatrix"]:
            shutil.copytree(artifacts / "imatrix", job / outputs["workdir"] / "cache" / "imatrix")
        shutil.copytree(artifacts / "bench-reference", job / outputs["workdir"] / "cache" / "bench-reference")
        built = hubbot(["build", "-c", "variants.yaml", "--only", name, "--require-artifacts"], job, job_env)
        if entry["imatrix"]:
            # The shared matrix is used as is, never computed again in a build job.
            assert "using the cached importance matrix" in built.stderr
            assert "computing the importance matrix" not in built.stderr
        benched = hubbot(["bench", "-c", "variants.yaml", "--only", name, "--require-reference"], job, job_env)
        assert "computing the reference distributions" not in benched.stderr
        hubbot(["publish", "-c", "variants.yaml", "--only", name, "--no-card", "--skip-bench"], job, job_env)
        assert "README.md" not in local_hub.files(MATRIX_REPO), "a build job pushed the card"
        hubbot(["ci", "export", "-c", "variants.yaml", "--only", name, "-o", str(artifacts / f"results-{name}")],
               job, job_env)

    # card job: merge every job's results, render the card, push README.md last.
    card_job, job_env = new_job(tmp_path, "card", matrix_yaml, env)
    folders = sorted(str(p) for p in artifacts.glob("results-*"))
    hubbot(["merge", "-c", "variants.yaml", *folders], card_job, job_env)
    assert not list((card_job / ".hubbot" / "out").glob("*.gguf")), "the card job must not need the GGUF files"
    hubbot(["publish", "-c", "variants.yaml", "--card-only"], card_job, job_env)

    # The same ladder published from one machine, to another repo on the same server.
    single, job_env = new_job(tmp_path, "single", ladder_yaml(source, calibration_text, evaluation_text, SINGLE_REPO),
                              env)
    hubbot(["publish", "-c", "variants.yaml"], single, job_env)

    spread, whole = local_hub.files(MATRIX_REPO), local_hub.files(SINGLE_REPO)
    assert sorted(spread) == sorted(whole)
    ladder = {e["file"] for e in matrix["include"]} | {"gemma-3-270m.imatrix.gguf", "README.md"}
    assert ladder <= set(spread)
    for name, remote in whole.items():
        if name not in ("README.md", "hubbot-results.json"):  # these two name their repo
            assert spread[name] == remote, f"{name} differs between the matrix and the single-machine publish"
    card_spread = local_hub.read_file(MATRIX_REPO, "README.md").decode()
    card_whole = local_hub.read_file(SINGLE_REPO, "README.md").decode()
    assert card_spread.replace(MATRIX_REPO, SINGLE_REPO) == card_whole
    records_spread = local_hub.read_file(MATRIX_REPO, "hubbot-results.json").decode()
    assert records_spread.replace(MATRIX_REPO, SINGLE_REPO) == local_hub.read_file(SINGLE_REPO, "hubbot-results.json").decode()
    # The card went last: the newest commit of the matrix repo is the one that added README.md.
    newest = local_hub.commits(MATRIX_REPO)[0]
    older = local_hub.commits(MATRIX_REPO)[1]
    assert "README.md" in newest["files"] and "README.md" not in older["files"]
    for entry in matrix["include"]:
        assert entry["file"] in card_spread


# --- a release from a safetensors repo: conversion, staging, a failed job rerun, sizes -------------

HF_SOURCE = "org/tiny-llama"
CKPT_REPO = f"{USER}/tiny-llama-matrix-GGUF"
CKPT_SINGLE = f"{USER}/tiny-llama-single-GGUF"


def checkpoint_yaml(calibration: Path, evaluation: Path, repo: str) -> str:
    return f"""\
source:
  repo: {HF_SOURCE}
  dtype: bf16
target:
  repo: {repo}
  gated: false
card:
  model_name: tiny-llama
imatrix:
  calibration:
    path: {calibration}
    name: hubbot calibration excerpts
  ctx: 64
  chunks: 4
benchmark:
  text:
    path: {evaluation}
    name: hubbot evaluation excerpts
  ctx: 64
  chunks: 4
  speed: false
build:
  threads: 2
variants:
  - name: bf16
    type: BF16
  - name: q8_0
    type: Q8_0
    imatrix: off
  - name: q4_0
    type: Q4_0
"""


def job_files(folder: Path, env: dict[str, str]) -> dict[str, int]:
    """Every file a job wrote, with the disk it takes in whole 4 KB blocks, as the plan counts them
    (not st_blocks: a filesystem may hold speculative preallocation on a file just written): its
    checkout and work folder, its HOME (Hub cache), its temp."""
    return {str(p): -(-p.stat().st_size // 4096) * 4096 for root in (folder, Path(env["HOME"]), Path(env["TMPDIR"]))
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_release_of_a_hub_checkpoint_converts_once_reruns_a_failed_job_and_fits_its_plan(
        tmp_path, local_hub, tiny_hf, converter_env, calibration_text, evaluation_text):  # noqa: F811
    files = {p.name: p.read_bytes() for p in tiny_hf.iterdir()} | {"README.md": b"---\nlicense: mit\n---\n# tiny\n"}
    local_hub.add_commit(HF_SOURCE, files)
    # The converter's venv is a tool the runner has installed (the composite action caches it), not data.
    env = {**os.environ, "HF_ENDPOINT": local_hub.endpoint, "HF_TOKEN": WRITE_TOKEN, "HF_HUB_DISABLE_XET": "1",
           "HUBBOT_CONVERTER_VENV": str(converter_env.path)}
    text = checkpoint_yaml(calibration_text, evaluation_text, CKPT_REPO)
    artifacts = tmp_path / "artifacts"
    staged_json, plan_file = artifacts / "plan" / "staged.json", artifacts / "plan" / "plan.json"
    sizes: dict[str, dict[str, int]] = {}

    convert, job_env = new_job(tmp_path, "convert", text, env)
    hubbot(["plan", "-c", "variants.yaml", "--check-job", "convert"], convert, job_env)
    hubbot(["stage", "push", "-c", "variants.yaml", "-o", str(staged_json)], convert, job_env)
    plan = json.loads(hubbot(["plan", "-c", "variants.yaml", "--json"], convert, job_env).stdout)
    plan_file.write_text(json.dumps(plan))
    sizes["convert"] = job_files(convert, job_env)
    staged = json.loads(staged_json.read_text())
    assert staged["variant"] == "bf16" and staged["branch"] is None
    assert staged["revision"] == local_hub.sha(CKPT_REPO) and "README.md" not in local_hub.files(CKPT_REPO)
    served = {f: n for (repo, f), n in local_hub.served_by_file.items() if repo == HF_SOURCE}
    weights = {p.name: p.stat().st_size for p in tiny_hf.glob("*.safetensors")}
    # The safetensors once (and their headers, which the convert job's check reads first).
    assert all(size <= served[name] < size + 2**20 for name, size in weights.items())
    workdir = ".hubbot"

    def job(name: str) -> tuple[Path, dict[str, str]]:
        folder, job_env = new_job(tmp_path, name.replace(":", "-"), text, env)
        kind, _, variant = name.partition(":")
        hubbot(["plan", "-c", "variants.yaml", "--check-job", kind, "--plan-file", str(plan_file)]
               + (["--only", variant] if variant else []), folder, job_env)
        hubbot(["stage", "fetch", "-c", "variants.yaml", "--staged", str(staged_json), "--job", name], folder, job_env)
        return folder, job_env

    folder, job_env = job("imatrix")
    hubbot(["imatrix", "-c", "variants.yaml"], folder, job_env)
    hubbot(["bench", "-c", "variants.yaml", "--reference-only"], folder, job_env)
    for sub in ("imatrix", "bench-reference"):
        shutil.copytree(folder / workdir / "cache" / sub, artifacts / sub)
    sizes["imatrix"] = job_files(folder, job_env)

    def build_job(variant: str) -> None:
        folder, job_env = job(f"build:{variant}")
        for sub in ("imatrix", "bench-reference"):
            shutil.copytree(artifacts / sub, folder / workdir / "cache" / sub)
        built = hubbot(["build", "-c", "variants.yaml", "--only", variant, "--require-artifacts"], folder, job_env)
        assert "converting" not in built.stderr.lower()
        hubbot(["bench", "-c", "variants.yaml", "--only", variant, "--require-reference"], folder, job_env)
        hubbot(["publish", "-c", "variants.yaml", "--only", variant, "--no-card", "--skip-bench"], folder, job_env)
        out = artifacts / f"results-{variant}"
        shutil.rmtree(out, ignore_errors=True)  # upload-artifact with overwrite: true
        hubbot(["ci", "export", "-c", "variants.yaml", "--only", variant, "-o", str(out)], folder, job_env)
        sizes[f"build:{variant}"] = job_files(folder, job_env)

    def card_job(attempt: int) -> str:
        folder, job_env = new_job(tmp_path, f"card-{attempt}", text, env)
        hubbot(["merge", "-c", "variants.yaml", *sorted(str(p) for p in artifacts.glob("results-*"))], folder, job_env)
        hubbot(["publish", "-c", "variants.yaml", "--card-only"], folder, job_env)
        sizes["card"] = job_files(folder, job_env)
        return local_hub.read_file(CKPT_REPO, "README.md").decode()

    # The float variant is the staged file (its job exports its record); q4_0's job fails first.
    build_job("bf16")
    build_job("q8_0")
    first = card_job(1)
    assert "tiny-llama-q4_0.gguf" not in local_hub.files(CKPT_REPO)
    missing = first.split("## Not published yet")[1].split("\n## ")[0]
    assert "q4_0" in missing and "q8_0" not in missing
    # The rerun of the failed job, then of the card job, completes the release.
    build_job("q4_0")
    final = card_job(2)
    assert "## Not published yet" not in final
    # No job after convert touched the safetensors.
    assert {f: n for (repo, f), n in local_hub.served_by_file.items() if repo == HF_SOURCE} == served

    single, job_env = new_job(tmp_path, "single", checkpoint_yaml(calibration_text, evaluation_text, CKPT_SINGLE), env)
    hubbot(["publish", "-c", "variants.yaml"], single, job_env)
    spread, whole = local_hub.files(CKPT_REPO), local_hub.files(CKPT_SINGLE)
    assert sorted(spread) == sorted(whole)
    for name, remote in whole.items():
        if name not in ("README.md", "hubbot-results.json"):
            assert spread[name] == remote, f"{name} differs between the matrix and the single-machine publish"
    assert final.replace(CKPT_REPO, CKPT_SINGLE) == local_hub.read_file(CKPT_SINGLE, "README.md").decode()

    # Each job's disk against the plan the convert job wrote (the converter's venv is the runner's tool).
    estimates = {j["name"]: j["disk"] - sum(i["bytes"] for i in j["disk_items"] if "venv" in i["what"])
                 for j in plan["resources"]["jobs"]}
    items = {j["name"]: j["disk_items"] for j in plan["resources"]["jobs"]}
    for name, files in sizes.items():
        measured = sum(files.values())
        biggest = sorted(files.items(), key=lambda kv: -kv[1])[:6]
        print(f"{name}: disk {measured:,} B measured, {estimates[name]:,} B planned ({estimates[name] / measured:.2f}x)")
        why = f"job {name}: {measured:,} bytes on disk, the plan said {estimates[name]:,} ({items[name]}); biggest: {biggest}"
        assert 1 / 1.5 <= measured / estimates[name] <= 1.5, why
