"""The card preview (`hubbot card --preview`, what the card-preview workflow runs on a pull request).

A ladder is published to the local Hub (with its records file, ``hubbot-results.json``), then a
fresh folder with a changed ladder previews the card: published and unchanged files keep their
published figures, the others show llama.cpp's plan marked "not yet measured", and one line says
what changed. The last test replays the workflow's own script on a pull-request-like git checkout
of a real-model ladder whose source is a GGUF on the Hub that the preview must not download.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from support.configs import write_config
from support.hub import USER, WRITE_TOKEN, tiny_ladder_yaml
from support.paths import REPO_ROOT

from hubbot.card.published import RECORDS_NAME, parse_records
from hubbot.cli import main
from hubbot.config import load_config
from hubbot.errors import CardError
from hubbot.gguf_io.header import header_length
from hubbot.hub import ranges
from hubbot.hub.push import PushOptions
from hubbot.pipeline import publish_project

REPO = f"{USER}/tiny-GGUF"


def publish(folder: Path, text: str, hub) -> Path:
    cfg = write_config(folder, text)
    publish_project(load_config(cfg), skip_bench=True, options=PushOptions(endpoint=hub.endpoint, token=WRITE_TOKEN))
    return cfg


@pytest.fixture
def reader(local_hub, monkeypatch):
    """The preview's side: the local Hub as HF_ENDPOINT and no token (a pull request has no secrets)."""
    monkeypatch.setenv("HF_ENDPOINT", local_hub.endpoint)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return local_hub


def preview_cli(cfg: Path, *extra: str):
    result = CliRunner().invoke(main, ["card", "-c", str(cfg), "--preview", *extra])
    assert result.exit_code == 0, result.output
    return result


def test_publish_pushes_the_records_with_the_card(local_hub, tmp_path, tiny_gguf):
    cfg = publish(tmp_path / "pub", tiny_ladder_yaml(tiny_gguf), local_hub)
    newest, older = local_hub.commits(REPO)[0], local_hub.commits(REPO)[1]
    assert RECORDS_NAME in newest["files"] and RECORDS_NAME not in older["files"]  # in the card's commit
    records = parse_records(local_hub.read_file(REPO, RECORDS_NAME).decode(), RECORDS_NAME)
    manifest = json.loads((load_config(cfg).workdir / "manifest.json").read_text())["outputs"]
    assert sorted(records.variants) == ["tiny-q4_0.gguf", "tiny-q8_0.gguf"]
    for name, rec in records.variants.items():
        entry = rec["entry"]
        assert entry["sha256"] == manifest[name]["sha256"] and entry["input_key"] == manifest[name]["input_key"]
        assert "mtime_ns" not in entry and "peak_rss" not in entry  # one machine's facts stay local
        assert entry["file_facts"]["tensor_types"] == manifest[name]["tensor_types"]
    assert WRITE_TOKEN not in local_hub.read_file(REPO, RECORDS_NAME).decode()


def test_preview_of_a_changed_ladder_says_what_changed(reader, tmp_path, tiny_gguf):
    publish(tmp_path / "pub", tiny_ladder_yaml(tiny_gguf), reader)
    published_card = reader.read_file(REPO, "README.md").decode()
    # The pull request: q8_0 removed, q4_0 made Q4_1 (same file name: rebuilt), q5_0 added.
    changed = "  - name: q4_0\n    type: Q4_1\n  - name: q5_0\n    type: Q5_0\n"
    cfg = write_config(tmp_path / "pr", tiny_ladder_yaml(tiny_gguf, variants=changed))
    result = preview_cli(cfg)
    assert ("changes against hubbot-test/tiny-GGUF: 1 added (q5_0), 1 removed (q8_0), 1 rebuilt (q4_0), "
            "0 unchanged") in result.stderr.splitlines()
    card = result.stdout
    assert "`tiny-q8_0.gguf`" not in card and "`tiny-q5_0.gguf`" in card
    assert card.count("Not built yet, so not yet measured") == 2
    assert "| `q5_0` (not yet measured) | Q5_0 |" in card
    assert published_card != card and not (load_config(cfg).workdir / "out" / "tiny-q5_0.gguf").exists()


def test_preview_of_an_unchanged_ladder_is_the_published_card(reader, tmp_path, tiny_gguf):
    publish(tmp_path / "pub", tiny_ladder_yaml(tiny_gguf), reader)
    cfg = write_config(tmp_path / "pr", tiny_ladder_yaml(tiny_gguf))
    result = preview_cli(cfg)
    assert "changes against hubbot-test/tiny-GGUF: 0 added, 0 removed, 0 rebuilt, 2 unchanged" in result.stderr
    assert result.stdout == reader.read_file(REPO, "README.md").decode()


def test_preview_of_a_repo_not_published_yet(reader, tmp_path, tiny_gguf):
    cfg = write_config(tmp_path / "pr", tiny_ladder_yaml(tiny_gguf))
    html = tmp_path / "preview.html"
    result = preview_cli(cfg, "-o", str(tmp_path / "preview.md"), "--html", str(html))
    line = "changes against hubbot-test/tiny-GGUF: nothing is published yet; all 2 variants are new"
    assert line in result.stderr.splitlines()
    card = (tmp_path / "preview.md").read_text()
    assert "| `q8_0` (not yet measured) | Q8_0 | 2.98 MB | 8.55 | – |" in card
    assert line in html.read_text()
    assert reader.load_repo(REPO) is None and reader.write_requests() == 0  # nothing was written to the Hub


def test_planned_shards_are_the_shards_publish_makes(reader, tmp_path, tiny_gguf):
    text = tiny_ladder_yaml(tiny_gguf, extra="  max_shard_size: 1MB\n")
    result = preview_cli(write_config(tmp_path / "pr", text))
    unit = {"KB": 1e3, "MB": 1e6}
    planned = {m.group(1): float(m.group(2)) * unit[m.group(3)]
               for m in re.finditer(r"- `(tiny-q\d_0-\d{5}-of-\d{5}\.gguf)`: ([\d.]+) (KB|MB)\n", result.stdout)}
    assert len(planned) >= 4, result.stdout  # both files are over 1 MB
    publish(tmp_path / "pub", text, reader)
    on_hub = {n: f["size"] for n, f in reader.files(REPO).items() if re.match(r"tiny-q\d_0-\d{5}", n)}
    assert set(on_hub) == set(planned)
    for name, size in on_hub.items():
        assert abs(planned[name] - size) < 10_000, (name, planned[name], size)


def test_a_records_file_from_a_newer_hubbot_is_refused_in_one_line(reader, tmp_path, tiny_gguf):
    reader.add_commit(REPO, {RECORDS_NAME: json.dumps({"format": "hubbot-results", "version": 99}).encode(),
                             "README.md": b"# card"})
    cfg = write_config(tmp_path / "pr", tiny_ladder_yaml(tiny_gguf))
    result = CliRunner().invoke(main, ["card", "-c", str(cfg), "--preview"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {REPO}/{RECORDS_NAME} was written by a newer hubbot (None, format version 99); upgrade hubbot to "
        "preview against it")
    with pytest.raises(CardError, match="not valid JSON"):
        parse_records("{", "x")


def test_hub_gguf_source_is_planned_from_its_header_only(reader, tmp_path, tiny_gguf, monkeypatch):
    data = tiny_gguf.read_bytes()
    reader.add_commit("org/tiny", {"tiny-f16.gguf": data})
    # A small first range, so reading the header takes several requests of doubling size.
    monkeypatch.setattr(ranges, "FIRST_BYTES", 4096)
    text = ("source:\n  repo: org/tiny\n  file: tiny-f16.gguf\ntarget:\n  repo: hubbot-test/tiny-GGUF\n"
            "card:\n  model_name: tiny\nvariants:\n  - name: q8_0\n    type: Q8_0\n")
    cfg = write_config(tmp_path / "pr", text)
    served = reader.bytes_served
    result = preview_cli(cfg)
    assert reader.bytes_served - served < header_length(data) + 8 * 4096 < len(data) // 4
    standin = next((load_config(cfg).workdir / "cache" / "standin").rglob("tiny-f16.gguf"))
    assert standin.stat().st_size == len(data) and standin.read_bytes()[:header_length(data)] == data[:header_length(data)]
    assert standin.stat().st_blocks * 512 < len(data) // 2  # a sparse file: the weights were never written
    # The same plan as from the whole file.
    local = write_config(tmp_path / "local", text.replace("  repo: org/tiny\n  file: tiny-f16.gguf\n",
                                                          f"  path: {tiny_gguf}\n"))
    whole = json.loads(CliRunner().invoke(main, ["plan", "-c", str(local), "--json"]).stdout)["variants"][0]
    assert f"| `q8_0` (not yet measured) | Q8_0 | {whole['size'] / 1e6:.2f} MB |" in result.stdout
    assert "Source weights: [org/tiny](https://huggingface.co/org/tiny) at revision" in result.stdout


def test_safetensors_source_is_planned_from_the_published_float_variant(reader, tmp_path, tiny_gguf):
    """Without the converted source, the preview reads the published F16 variant's header (the converted
    source plus hubbot's keys) from the target repo."""
    src_sha = reader.add_commit("org/tiny-hf", {"config.json": b"{}", "model.safetensors": b"\0" * 1024})
    f16 = tiny_gguf.read_bytes()
    records = {"format": "hubbot-results", "version": 1, "repo": REPO, "imatrix": {}, "variants": {
        "tiny-f16.gguf": {"result": None, "entry": {
            "kind": "variant", "variant": "f16", "file": "tiny-f16.gguf", "type": "F16", "size": len(f16),
            "sha256": "0" * 64, "input_key": "an older key", "recipe": {"overrides": []},
            "source": {"repo": "org/tiny-hf", "revision": src_sha, "sha256": "1" * 64}}}}}
    reader.add_commit(REPO, {"tiny-f16.gguf": f16, RECORDS_NAME: json.dumps(records).encode(), "README.md": b"# c"})
    text = ("source:\n  repo: org/tiny-hf\n  dtype: f16\ntarget:\n  repo: hubbot-test/tiny-GGUF\n"
            "card:\n  model_name: tiny\nvariants:\n  - name: f16\n    type: F16\n  - name: q8_0\n    type: Q8_0\n")
    result = preview_cli(write_config(tmp_path / "pr", text))
    assert "note: source header read from the published tiny-f16.gguf (range requests, no weights)" in result.stderr
    assert "1 added (q8_0), 0 removed, 1 rebuilt (f16)" in result.stderr
    assert "| `q8_0` (not yet measured) | Q8_0 | 2.98 MB |" in result.stdout


def test_safetensors_source_never_converted_lists_names_and_says_why(reader, tmp_path):
    reader.add_commit("org/tiny-hf", {"config.json": b"{}", "model.safetensors": b"\0" * 1024})
    text = ("source:\n  repo: org/tiny-hf\n  dtype: f16\ntarget:\n  repo: hubbot-test/tiny-GGUF\n"
            "card:\n  model_name: tiny\nvariants:\n  - name: f16\n    type: F16\n  - name: q8_0\n    type: Q8_0\n")
    result = preview_cli(write_config(tmp_path / "pr", text))
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note: ")]
    assert notes == ["note: org/tiny-hf is a safetensors checkpoint and no F16 variant of it is published in "
                     "hubbot-test/tiny-GGUF yet: sizes of unbuilt files need the converted source (run `hubbot plan` "
                     "where the weights are)"]
    assert "nothing is published yet; all 2 variants are new" in result.stderr
    assert "| `q8_0` (not yet measured) | Q8_0 | – | – | – |" in result.stdout
    assert "for llama.cpp and the tools built on it: 2 files.\n" in result.stdout


def test_a_local_source_missing_here_is_a_note_not_an_error(reader, tmp_path, tiny_gguf):
    publish(tmp_path / "pub", tiny_ladder_yaml(tiny_gguf), reader)
    gone = tmp_path / "elsewhere" / "tiny-f16.gguf"  # e.g. a runner without the local weights
    changed = "  - name: q8_0\n    type: Q8_0\n  - name: q4_0\n    type: Q4_0\n  - name: q5_0\n    type: Q5_0\n"
    cfg = write_config(tmp_path / "pr", tiny_ladder_yaml(gone, variants=changed))
    result = preview_cli(cfg)
    assert f"note: source {gone} is not on this machine, so files not built yet cannot be planned" in result.stderr
    # The published files keep their figures and records; the new one is listed by name and type.
    assert "1 added (q5_0), 0 removed, 0 rebuilt, 0 unchanged, 2 not checked (q8_0, q4_0)" in result.stderr
    assert "sha256 `" in result.stdout and result.stdout.count("Not built yet") == 1
    assert "| `q5_0` (not yet measured) | Q5_0 | – | – | – |" in result.stdout


# --- the workflow, replayed ------------------------------------------------------------------------

def workflow_script() -> str:
    data = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "card-preview.yml").read_text())
    steps = data["jobs"]["preview"]["steps"]
    return next(s["run"] for s in steps if s.get("name") == "Render the cards")


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def real_ladder(variants: str) -> str:
    return f"""\
source:
  repo: google/gemma-3-270m-bf16-gguf
  file: gemma-3-270m-bf16.gguf
target:
  repo: {USER}/gemma-preview-GGUF
  gated: false
card:
  model_name: gemma-3-270m
  quantized_by: hubbot-test
imatrix:
  calibration:
    path: calibration.txt
    name: calibration excerpts
  chunks: 2
benchmark:
  text:
    path: evaluation.txt
    name: evaluation excerpts
  chunks: 2
  speed: false
variants:
{variants}"""


LADDER = ("  - name: q8_0\n    type: Q8_0\n  - name: q4_k\n    type: Q4_K_M\n    output: Q8_0\n"
          "  - name: iq4_xs\n    type: IQ4_XS\n")
ADDED = "  - name: q4_0\n    type: Q4_0\n"


def run_hubbot(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hubbot", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_card_preview_workflow_replayed_on_a_pull_request(local_hub, tmp_path, gemma_bf16, calibration_text,
                                                          evaluation_text):
    """Acceptance: the workflow's script, on a pull-request-like checkout of a published real-model ladder
    with one variant added, shows every variant with its size, the published figures of the unchanged
    ones and the added one marked as not yet measured, without downloading the 0.5 GB source."""
    source_repo, source_file = "google/gemma-3-270m-bf16-gguf", "gemma-3-270m-bf16.gguf"
    local_hub.add_commit(source_repo, {source_file: gemma_bf16.read_bytes(),
                                       "README.md": b"---\nlicense: gemma\n---\n# Gemma 3 270M\n"})
    base = {**os.environ, "HF_ENDPOINT": local_hub.endpoint, "HUBBOT_NO_PROGRESS": "1", "PYTHONPATH": str(REPO_ROOT)}

    # The release: the ladder as merged on main, published with its figures.
    pub = tmp_path / "release"
    pub.mkdir()
    for text in (calibration_text, evaluation_text):
        shutil.copy(text, pub / text.name)
    (pub / "variants.yaml").write_text(real_ladder(LADDER))
    run_hubbot(["publish", "-c", "variants.yaml"], pub, {**base, "HF_TOKEN": WRITE_TOKEN})
    repo = f"{USER}/gemma-preview-GGUF"
    published = parse_records(local_hub.read_file(repo, RECORDS_NAME).decode(), RECORDS_NAME)
    published_card = local_hub.read_file(repo, "README.md").decode()

    # The pull request: a git checkout (origin/main = the release, HEAD adds a variant), no token.
    checkout = tmp_path / "checkout"
    shutil.copytree(pub, checkout, ignore=shutil.ignore_patterns(".hubbot"))
    git(checkout, "init", "-q", "-b", "main")
    git(checkout, "add", ".")
    git(checkout, "commit", "-q", "-m", "the published ladder")
    git(checkout, "remote", "add", "origin", str(checkout))
    git(checkout, "fetch", "-q", "origin")
    git(checkout, "checkout", "-q", "-b", "add-q4_0")
    (checkout / "variants.yaml").write_text(real_ladder(LADDER + ADDED))
    git(checkout, "commit", "-q", "-am", "add q4_0")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "hubbot").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hubbot "$@"\n')
    (tools / "hubbot").chmod(0o755)
    summary = tmp_path / "summary.md"
    hf_home = tmp_path / "checkout-hf-home"  # the preview job's own, empty Hub cache
    env = {**base, "PATH": f"{tools}:{os.environ['PATH']}", "GITHUB_STEP_SUMMARY": str(summary), "BASE_REF": "main",
           "HF_HOME": str(hf_home)}
    env.pop("HF_TOKEN", None)
    served = local_hub.bytes_served
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", workflow_script()], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # No weights were downloaded: the plan came from the source's header (a few MB of 0.5 GB).
    assert local_hub.bytes_served - served < 20_000_000 < gemma_bf16.stat().st_size
    assert not list(hf_home.rglob(source_file))

    text = summary.read_text()
    assert "## Card preview: `variants.yaml`" in text
    assert f"> changes against {repo}: 1 added (q4_0), 0 removed, 0 rebuilt, 3 unchanged" in text
    card = (checkout / "preview" / "root.md").read_text()
    assert card in text  # the whole card is in the job summary
    # Every variant with its size; the unchanged ones with the published figures, row for row.
    quality_rows = {line.split("|")[1].strip(): line for line in card.splitlines() if line.startswith("| `")}
    published_rows = {line.split("|")[1].strip(): line for line in published_card.splitlines() if line.startswith("| `")}
    for name in ("q8_0", "q4_k", "iq4_xs"):
        fname = f"gemma-3-270m-{name}.gguf"
        ppl = published.result(fname)["perplexity"]["ppl"]
        assert quality_rows[f"`{name}`"] == published_rows[f"`{name}`"]
        assert f"{ppl:.4f}" in quality_rows[f"`{name}`"]
        assert f"sha256 `{published.entry(fname).sha256}`" in card
    added = quality_rows["`q4_0` (not yet measured)"]
    assert "| Q4_0 |" in added and added.rstrip().endswith("| – | – | – |")
    # The plan's size is the built file's size, up to the few hundred bytes of metadata a build adds.
    run_hubbot(["build", "-c", "variants.yaml", "--only", "q4_0"], checkout, {**base, "HF_TOKEN": WRITE_TOKEN})
    built = (checkout / ".hubbot" / "out" / "gemma-3-270m-q4_0.gguf").stat().st_size
    planned = float(added.split("|")[3].split()[0]) * 1e6
    assert abs(planned - built) < 10_000, (planned, built)
    html = (checkout / "preview" / "root.html").read_text()
    assert "changes against" in html and "<script" not in html.lower()
