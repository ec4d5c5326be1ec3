"""The staged source of a release (`hubbot stage push` / `stage fetch`) on the tiny model and the local Hub.

The convert job builds the float variant and pushes it first, pinned by commit; a later job in its
own folder fetches exactly that file, verifies it and builds from it, with the same build keys and
bytes as a machine that used the source itself. Bad staged input is a one-line error naming the job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.configs import write_config
from support.hub import USER
from support.paths import DATA_DIR

from hubbot.cli import main
from hubbot.config import load_config
from hubbot.workdir import WorkDir

REPO = f"{USER}/tiny-staged-GGUF"
VARIANTS = "  - name: f16\n    type: F16\n  - name: q8_0\n    type: Q8_0\n"


def ladder(source: Path, repo: str = REPO, variants: str = VARIANTS) -> str:
    return (f"source:\n  path: {source}\n  dtype: f16\ntarget:\n  repo: {repo}\n  gated: false\n"
            f"card:\n  model_name: tiny\nvariants:\n{variants}")


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def hub_endpoint(local_hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.endpoint)


@pytest.fixture
def staged(local_hub, tmp_path, tiny_gguf):
    """The convert job's work: (its staged.json, the config text every job uses)."""
    text = ladder(tiny_gguf)
    cfg = write_config(tmp_path / "convert", text)
    out = tmp_path / "convert" / "staged.json"
    result = run("stage", "push", "-c", str(cfg), "-o", str(out))
    assert result.exit_code == 0, result.output
    return out, text


def test_convert_job_pushes_the_float_variant_first_pinned_by_commit(local_hub, staged):
    out, _ = staged
    data = json.loads(out.read_text())
    assert data["variant"] == "f16" and data["branch"] is None and data["repo"] == REPO
    assert [f["name"] for f in data["files"]] == ["tiny-f16.gguf"]
    listed = local_hub.files(REPO, data["revision"])
    assert "tiny-f16.gguf" in listed and "README.md" not in listed  # the card comes last, from the card job
    assert data["revision"] == local_hub.sha(REPO)


def test_a_later_job_builds_from_the_staged_file_with_single_machine_keys(local_hub, tmp_path, tiny_gguf, staged):
    out, text = staged
    job = write_config(tmp_path / "build-q8_0", text)
    result = run("stage", "fetch", "-c", str(job), "--staged", str(out), "--job", "build:q8_0")
    assert result.exit_code == 0, result.output
    cfg = load_config(job)
    work = WorkDir(cfg.workdir)
    assert (work.out / "tiny-f16.gguf").is_file() and work.manifest.get("tiny-f16.gguf")
    assert run("build", "-c", str(job), "--only", "q8_0", "--only", "f16").exit_code == 0
    single = write_config(tmp_path / "single", text)
    assert run("build", "-c", str(single), "--only", "q8_0", "--only", "f16").exit_code == 0
    one = WorkDir(load_config(single).workdir)
    for name in ("tiny-q8_0.gguf", "tiny-f16.gguf"):
        a, b = work.manifest.get(name), one.manifest.get(name)
        assert a.input_key == b.input_key and a.sha256 == b.sha256 and a.source == b.source, name
    assert (work.out / "tiny-q8_0.gguf").read_bytes() == (one.out / "tiny-q8_0.gguf").read_bytes()


def test_bad_staged_input_is_one_line_naming_the_job(local_hub, tmp_path, staged):
    out, text = staged
    job = write_config(tmp_path / "imatrix", text)
    data = json.loads(out.read_text())

    def fetch(staged_path: Path):
        result = CliRunner().invoke(main, ["stage", "fetch", "-c", str(job), "--staged", str(staged_path),
                                           "--job", "imatrix"])
        assert result.exit_code == 1, result.output
        line = result.output.strip()
        assert "\n" not in line and "Traceback" not in line and "job imatrix" in line
        return line

    assert "staged.json" in fetch(tmp_path / "nothing" / "staged.json") and "rerun the convert job" in fetch(
        tmp_path / "nothing" / "staged.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "files": [{**data["files"][0], "sha256": "0" * 64}]}))
    line = fetch(bad)
    assert "0" * 64 in line and data["files"][0]["sha256"] in line and "rerun the convert job" in line
    assert not (WorkDir(load_config(job).workdir).out / "tiny-f16.gguf").exists()  # nothing half-registered
    gone = tmp_path / "gone.json"
    gone.write_text(json.dumps({**data, "revision": "1" * 40}))
    assert "cannot be fetched" in fetch(gone)
    assert local_hub.sha(REPO) == data["revision"]  # nothing published was touched


def test_a_ladder_without_its_float_variant_stages_on_a_branch(local_hub, tmp_path, tiny_gguf):
    text = ladder(tiny_gguf, variants="  - name: q8_0\n    type: Q8_0\n")
    cfg = write_config(tmp_path / "convert", text)
    out = tmp_path / "staged.json"
    assert run("stage", "push", "-c", str(cfg), "-o", str(out)).exit_code == 0
    data = json.loads(out.read_text())
    assert data["branch"] == "hubbot-staging" and data["variant"] is None
    assert "README.md" not in local_hub.files(REPO, "hubbot-staging")
    job = write_config(tmp_path / "build", text)
    assert run("stage", "fetch", "-c", str(job), "--staged", str(out)).exit_code == 0
    assert run("build", "-c", str(job), "--only", "q8_0").exit_code == 0
    single = write_config(tmp_path / "single", text)
    assert run("build", "-c", str(single), "--only", "q8_0").exit_code == 0
    a = WorkDir(load_config(job).workdir).manifest.get("tiny-q8_0.gguf")
    b = WorkDir(load_config(single).workdir).manifest.get("tiny-q8_0.gguf")
    assert a.input_key == b.input_key and a.sha256 == b.sha256


def test_a_sharded_float_file_is_staged_and_fetched_shard_by_shard(local_hub, tmp_path, tiny_gguf):
    # The 27B BF16 is over the Hub's per-file limit, so its staged copy is shards: every later job
    # fetches each, checks each sha256 and builds from the first, as from the whole file.
    text = ladder(tiny_gguf, repo=f"{USER}/tiny-staged-shards-GGUF").replace(
        "  gated: false\n", "  gated: false\n  max_shard_size: 1MB\n").replace(
        "variants:\n", f"benchmark:\n  text: {{path: {DATA_DIR / 'evaluation.txt'}}}\n  ctx: 64\n  chunks: 2\n  speed: false\nvariants:\n")
    out = tmp_path / "staged.json"
    assert run("stage", "push", "-c", str(write_config(tmp_path / "convert", text)), "-o", str(out)).exit_code == 0
    data = json.loads(out.read_text())
    assert len(data["files"]) > 1 and all("-of-" in f["name"] for f in data["files"])
    job = write_config(tmp_path / "build-q8_0", text)
    result = run("stage", "fetch", "-c", str(job), "--staged", str(out), "--job", "build:q8_0")
    assert result.exit_code == 0, result.output
    work = WorkDir(load_config(job).workdir)
    assert all((work.out / f["name"]).is_file() for f in data["files"])
    assert not (work.out / "tiny-f16.gguf").exists() and work.manifest.get("tiny-f16.gguf")
    # The float variant's own job finds it built (its shards are the file): nothing is rebuilt.
    again = run("build", "-c", str(job), "--only", "f16")
    assert again.exit_code == 0 and "unchanged tiny-f16.gguf" in again.output, again.output
    assert not (work.out / "tiny-f16.gguf").exists()
    head = local_hub.sha(f"{USER}/tiny-staged-shards-GGUF")
    pushed = run("publish", "-c", str(job), "--only", "f16", "--no-card", "--skip-bench")
    assert pushed.exit_code == 0, pushed.output
    assert local_hub.sha(f"{USER}/tiny-staged-shards-GGUF") == head  # already there: no commit
    # The imatrix job's reference pass opens the float variant from its first shard.
    reference = run("bench", "-c", str(job), "--reference-only")
    assert reference.exit_code == 0, reference.output
    assert run("build", "-c", str(job), "--only", "q8_0").exit_code == 0
    single = write_config(tmp_path / "single", text)
    assert run("build", "-c", str(single), "--only", "q8_0").exit_code == 0
    one = WorkDir(load_config(single).workdir)
    a, b = work.manifest.get("tiny-q8_0.gguf"), one.manifest.get("tiny-q8_0.gguf")
    assert a.input_key == b.input_key and a.sha256 == b.sha256
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "files": [data["files"][0], {**data["files"][1], "sha256": "0" * 64}]}))
    again = CliRunner().invoke(main, ["stage", "fetch", "-c", str(write_config(tmp_path / "other", text)),
                                      "--staged", str(bad), "--job", "imatrix"])
    assert again.exit_code == 1 and data["files"][1]["name"] in again.output and "0" * 64 in again.output
