"""The release workflow played locally: plan → imatrix → one job per variant → card, on the real Gemma 270M.

Every job runs the commands its step in .github/workflows/release.yml runs, in its own folder and
its own process, against the local Hub server; jobs share only what the workflow's artifacts
carry. The result must equal a single-machine ``hubbot publish`` of the same ladder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


def new_job(root: Path, name: str, yaml_text: str) -> Path:
    """A fresh checkout for one job: its own folder, config and (default) work directory."""
    folder = root / "jobs" / name
    folder.mkdir(parents=True)
    (folder / "variants.yaml").write_text(yaml_text)
    return folder


def test_matrix_release_equals_single_machine_publish(tmp_path, local_hub, gemma_bf16, calibration_text,  # noqa: F811
                                                      evaluation_text):
    source = gemma_bf16
    env = {**os.environ, "HF_ENDPOINT": local_hub.endpoint, "HF_TOKEN": WRITE_TOKEN, "HF_HUB_DISABLE_XET": "1"}
    matrix_yaml = ladder_yaml(source, calibration_text, evaluation_text, MATRIX_REPO)
    artifacts = tmp_path / "artifacts"

    # plan job: the matrix, checked against the source by `hubbot plan --json`.
    plan_dir = new_job(tmp_path, "plan", matrix_yaml)
    plan = json.loads(hubbot(["plan", "-c", "variants.yaml", "--json", "--no-dry-run"], plan_dir, env).stdout)
    gh_output = plan_dir / "github_output"
    hubbot(["ci", "matrix", "-c", "variants.yaml", "--only", "", "--github-output", str(gh_output)], plan_dir, env)
    outputs = dict(line.split("=", 1) for line in gh_output.read_text().splitlines())
    matrix = json.loads(outputs["matrix"])
    assert [(e["variant"], e["file"]) for e in matrix["include"]] == \
        [(e["variant"], e["file"]) for e in plan["matrix"]["include"]]
    assert [e["imatrix"] for e in matrix["include"]] == [False, True, True]
    assert outputs["imatrix"] == "true" and outputs["target"] == MATRIX_REPO

    # imatrix job: computed once; its cache folder is the artifact.
    im_dir = new_job(tmp_path, "imatrix", matrix_yaml)
    hubbot(["imatrix", "-c", "variants.yaml", "--json"], im_dir, env)
    shutil.copytree(im_dir / outputs["workdir"] / "cache" / "imatrix", artifacts / "imatrix")

    # build jobs, one per matrix entry.
    for entry in matrix["include"]:
        name = entry["variant"]
        job = new_job(tmp_path, f"build-{name}", matrix_yaml)
        if entry["imatrix"]:
            shutil.copytree(artifacts / "imatrix", job / outputs["workdir"] / "cache" / "imatrix")
        only = ["--only", name] + (["--only", entry["extra"]] if entry["extra"] else [])
        built = hubbot(["build", "-c", "variants.yaml", *only], job, env)
        if entry["imatrix"]:
            # The shared matrix is used as is, never computed again in a build job.
            assert "using the cached importance matrix" in built.stderr
            assert "computing the importance matrix" not in built.stderr
        hubbot(["bench", "-c", "variants.yaml", "--only", name], job, env)
        hubbot(["publish", "-c", "variants.yaml", "--only", name, "--no-card", "--skip-bench"], job, env)
        assert "README.md" not in local_hub.files(MATRIX_REPO), "a build job pushed the card"
        hubbot(["ci", "export", "-c", "variants.yaml", "--only", name, "-o", str(artifacts / f"results-{name}")],
               job, env)

    # card job: merge every job's results, render the card, push README.md last.
    card_job = new_job(tmp_path, "card", matrix_yaml)
    folders = sorted(str(p) for p in artifacts.glob("results-*"))
    hubbot(["merge", "-c", "variants.yaml", *folders], card_job, env)
    assert not list((card_job / ".hubbot" / "out").glob("*.gguf")), "the card job must not need the GGUF files"
    hubbot(["publish", "-c", "variants.yaml", "--card-only"], card_job, env)

    # The same ladder published from one machine, to another repo on the same server.
    single = new_job(tmp_path, "single", ladder_yaml(source, calibration_text, evaluation_text, SINGLE_REPO))
    hubbot(["publish", "-c", "variants.yaml"], single, env)

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
