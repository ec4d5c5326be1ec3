"""The GitHub Actions workflows and the composite action: linted, and wired to real hubbot commands.

Two linters from PyPI check them: check-jsonschema with its bundled GitHub schemas (structure),
and actionlint (expressions, `needs`/`matrix`/`steps` references, the local action's inputs and,
when shellcheck is installed, the run scripts). Both run offline. Then every ``hubbot ...`` line
the workflows run is resolved against the click command tree, flags included, and the job
matrix contract (``hubbot ci matrix``, ``ci export``, ``merge``) is checked on synthetic results.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from support.cli_words import resolve, unknown_options
from support.paths import REPO_ROOT

from hubbot.cli import main
from hubbot.config import load_config
from hubbot.hub.release import MergeError, export_results, job_matrix, merge_results
from hubbot.manifest import ManifestEntry
from hubbot.workdir import Manifest, WorkDir, write_json_atomic

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
ACTION = REPO_ROOT / "action.yml"


def _bin(name: str) -> str:
    """A linter installed with the test extra, next to this Python first."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed; pip install -e '.[test]'"
    return found


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_bin("check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
                          capture_output=True, text=True, timeout=120, check=False)


def actionlint(root: Path, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_bin("actionlint"), "-no-color", *map(str, files)], cwd=root,
                          capture_output=True, text=True, timeout=120, check=False)


def load_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the workflow key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def expressions(path: Path) -> list[str]:
    """The ``${{ ... }}`` expressions of a workflow plus its ``if:`` conditions (bare expressions)."""
    text = path.read_text()
    return re.findall(r"\$\{\{(.*?)\}\}", text) + re.findall(r"^\s*if: (?!\$\{\{)(.*)$", text, flags=re.MULTILINE)


def test_the_expected_files_exist():
    assert {p.name for p in WORKFLOWS} >= {"release.yml", "ci.yml", "card-preview.yml"}
    assert ACTION.is_file()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_github_schema(workflow):
    result = check_jsonschema("vendor.github-workflows", workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_action_matches_github_schema():
    result = check_jsonschema("vendor.github-actions", ACTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_passes_every_workflow():
    result = actionlint(REPO_ROOT, *WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_linters_catch_broken_workflows(tmp_path):
    """Both linters really look: a typo in a job output, a step input and a key are reported."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    # release.yml installs hubbot from its own checkout in .hubbot-src (see docs/github-actions.md).
    (tmp_path / ".hubbot-src").mkdir()
    shutil.copy(ACTION, tmp_path / ".hubbot-src" / "action.yml")
    text = (REPO_ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert "needs.convert.outputs.workdir" in text and "python-version: ${{ env.PYTHON_VERSION }}" in text
    broken = (text.replace("needs.convert.outputs.workdir", "needs.convert.outputs.wrkdir")
              .replace("python-version: ${{ env.PYTHON_VERSION }}", "python-versoin: '3.11'"))
    bad = tmp_path / ".github" / "workflows" / "release.yml"
    bad.write_text(broken)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    lint = actionlint(tmp_path, bad)
    assert lint.returncode != 0
    assert '"wrkdir" is not defined' in lint.stdout and '"python-versoin" is not defined' in lint.stdout
    schema_bad = tmp_path / "schema.yml"
    schema_bad.write_text(text.replace("timeout-minutes: 360", "timeout_minutes: 360", 1))
    assert check_jsonschema("vendor.github-workflows", schema_bad).returncode != 0


# --- the hubbot commands the workflows run ------------------------------------------------------

def run_scripts() -> list[tuple[str, str]]:
    """(where, script) of every `run:` in the workflows and the composite action."""
    out = []
    for path in [*WORKFLOWS, ACTION]:
        data = load_yaml(path)
        jobs = data.get("jobs") or {"action": {"steps": data["runs"]["steps"]}}
        for job_name, job in jobs.items():
            for step in job.get("steps", []):
                if "run" in step:
                    out.append((f"{path.name}:{job_name}:{step.get('name', '')}", step["run"]))
    return out


_SHELL_WORDS = {"if", "then", "else", "elif", "fi", "do", "done", "!", "{", "}"}


def hubbot_calls() -> list[tuple[str, list[str]]]:
    """Every literal `hubbot ...` invocation, as words (variables, bash arrays and redirections dropped)."""
    calls = []
    for where, script in run_scripts():
        for line in script.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            command: list[str] = []
            for tok in [*lexer, ";"]:
                if tok and set(tok) <= set(";&|<>()"):
                    if command[:1] == ["hubbot"]:
                        calls.append((where, command[1:]))
                    command = [] if tok not in (">", ">>", "<") else ["#redirect"]
                elif command[:1] == ["#redirect"]:
                    command = ["#done"]
                elif not command and tok in _SHELL_WORDS:
                    continue
                elif not tok.startswith("$"):
                    command.append(tok)
    return calls


def test_workflows_run_real_hubbot_commands_and_flags():
    calls = hubbot_calls()
    named = {tuple(w for w in words if not w.startswith("-"))[:1] for _, words in calls}
    # The release flow's commands are all there (guards the extraction itself).
    assert {("ci",), ("plan",), ("imatrix",), ("build",), ("bench",), ("publish",), ("merge",), ("card",)} <= named
    for where, words in calls:
        cmd, rest = resolve(words)
        bad = unknown_options(cmd, rest)
        assert not bad, f"{where}: `hubbot {' '.join(words)}`: {cmd.name} has no option {bad[0]}"
        if cmd is main:
            continue  # the composite action's generic `hubbot "${command[@]}" ...`
        help_words = words[: len(words) - len(rest)] + ["--help"]
        result = CliRunner().invoke(main, help_words)
        assert result.exit_code == 0, f"{where}: hubbot {' '.join(help_words)}: {result.output}"


def test_release_matrix_keys_and_outputs_match_hubbot(tmp_path):
    """release.yml reads only matrix keys and plan outputs that `hubbot ci matrix` writes."""
    release = " ".join(expressions(REPO_ROOT / ".github" / "workflows" / "release.yml"))
    data = load_yaml(REPO_ROOT / ".github" / "workflows" / "release.yml")
    cfg = load_config(REPO_ROOT / "examples" / "gemma-3-270m" / "variants.yaml")
    entry_keys = set(job_matrix(cfg)["matrix"]["include"][0])
    assert set(re.findall(r"(?<![.\w])matrix\.(\w+)", release)) <= entry_keys
    gh = tmp_path / "out"
    result = CliRunner().invoke(main, ["ci", "matrix", "-c", str(cfg.path), "--github-output", str(gh)])
    assert result.exit_code == 0, result.output
    written = {line.split("=", 1)[0] for line in gh.read_text().splitlines()}
    plan_outputs = data["jobs"]["convert"]["outputs"]
    from_matrix = {m for v in plan_outputs.values() for m in re.findall(r"steps\.matrix\.outputs\.(\w+)", v)}
    assert from_matrix and from_matrix <= written
    assert json.loads(result.output)["matrix"]["include"][0]["variant"] == cfg.variants[0].name


RUNNER_INPUTS = {"runner_convert", "runner_imatrix", "runner_build", "runner_card"}


def _steps(job: dict, uses: str) -> list[dict]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(uses)]


def test_release_workflow_shape():
    data = load_yaml(REPO_ROOT / ".github" / "workflows" / "release.yml")
    on = data["on"]
    shared = {"config", "dry_run", "only", "max_parallel", "gpu"} | RUNNER_INPUTS
    assert set(on["workflow_dispatch"]["inputs"]) == shared
    # Reusable from other repositories: the same inputs, where hubbot comes from, and the token as a secret.
    assert set(on["workflow_call"]["inputs"]) == shared | {"hubbot_repository", "hubbot_ref", "tag"}
    assert set(on["workflow_call"]["secrets"]) == {"HF_TOKEN"}
    assert on["release"]["types"] == ["published"]
    assert data["concurrency"]["cancel-in-progress"] is False
    jobs = data["jobs"]
    assert list(jobs) == ["convert", "imatrix", "build", "card"]
    assert jobs["build"]["strategy"]["fail-fast"] is False
    assert "inputs.max_parallel" in str(jobs["build"]["strategy"]["max-parallel"])
    assert all("timeout-minutes" in j for j in jobs.values())
    # Safe reruns: never after a cancel, keyed on the target repo, every artifact overwritable.
    assert "!cancelled()" in jobs["card"]["if"] and "always()" not in jobs["card"]["if"]
    assert jobs["card"]["concurrency"]["group"].endswith("${{ needs.convert.outputs.target }}")
    for name, job in jobs.items():
        for step in _steps(job, "actions/upload-artifact"):
            assert step["with"].get("overwrite") is True, f"{name}: {step['name']}"
        # runs-on per job kind: the input, else the repository variable, else ubuntu-latest; JSON lists too.
        kind = "build" if name == "build" else name
        runs_on = job["runs-on"]
        assert f"inputs.runner_{kind}" in runs_on and f"vars.HUBBOT_RUNNER_{kind.upper()}" in runs_on
        assert "fromJSON(" in runs_on and "'ubuntu-latest'" in runs_on
        # The token only in the protected environment.
        if "secrets.HF_TOKEN" in json.dumps(job):
            assert job["environment"] == "hub-release", name
        # No system folders deleted on a self-hosted machine.
        for step in job["steps"]:
            if "sudo rm" in step.get("run", ""):
                assert "runner.environment == 'github-hosted'" in step["if"], f"{name}: {step['name']}"
        # The composite action comes from hubbot's own checkout, not from the caller's ./.
        assert [s["uses"] for s in _steps(job, "./")] == ["./.hubbot-src"]
        # Every job checks its runner before it downloads anything.
        runs = [s.get("run", "") for s in job["steps"]]
        check = next(i for i, r in enumerate(runs) if "--check-job" in r)
        assert not any("stage fetch" in r or "stage push" in r for r in runs[:check]), name
    # The data flow: staged once, reference distributions once, no float reference in a real build job.
    text = json.dumps(jobs["build"])
    assert "stage fetch" in text and "--require-reference" in text and "matrix.extra" not in text
    assert "--reference-only" in json.dumps(jobs["imatrix"]) and "stage push" in json.dumps(jobs["convert"])


def test_no_pull_request_workflow_can_read_the_token():
    """A pull request (from a fork too) never gets HF_TOKEN: no workflow it triggers names the secret."""
    seen = 0
    for path in WORKFLOWS:
        on = load_yaml(path)["on"]
        events = set(on) if isinstance(on, dict) else set([on] if isinstance(on, str) else on)
        if events & {"pull_request", "pull_request_target"}:
            seen += 1
            assert "HF_TOKEN" not in path.read_text(), f"{path.name} runs on pull requests and names HF_TOKEN"
    assert seen >= 2  # ci.yml and card-preview.yml


def test_the_composite_action_cache_never_restores_across_images_or_flags():
    steps = load_yaml(ACTION)["runs"]["steps"]
    cache = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache"))
    assert "restore-keys" not in cache["with"]
    key = cache["with"]["key"]
    for part in ("runner.os", "runner.arch", "steps.key.outputs.image", "steps.key.outputs.python",
                 "steps.key.outputs.llama", "steps.key.outputs.flags"):
        assert part in key
    install = next(s for s in steps if s.get("id") == "install")["run"]
    assert install.count("python -m hubbot.llama.selfcheck") == 2 and "--no-cache-dir --force-reinstall" in install


# --- the job-matrix contract on synthetic results ---------------------------------------------------

LADDER = """\
source:
  path: model.gguf
target:
  repo: someone/model-GGUF
card:
  model_name: m
variants:
  - name: q8_0
    type: Q8_0
  - name: q4_0
    type: Q4_0
"""


def _job(tmp_path: Path, name: str, entries: dict[str, dict], results: dict[str, dict] | None = None) -> Path:
    folder = tmp_path / name
    m = Manifest(folder / "manifest.json")
    m.entries = {name: ManifestEntry.from_json(e) for name, e in entries.items()}
    m.save()
    for sha, data in (results or {}).items():
        write_json_atomic(folder / "results" / "bench" / f"{sha}.json", data)
    return folder


def _entry(file: str, sha: str, source: str = "s" * 64, **kw) -> dict:
    return {"kind": "variant", "file": file, "sha256": sha, "size": 10, "mtime_ns": 1,
            "source": {"sha256": source}, **kw}


def test_merge_joins_jobs_and_refuses_disagreement(tmp_path):
    (tmp_path / "variants.yaml").write_text(LADDER)
    cfg = load_config(tmp_path / "variants.yaml")
    im = {"kind": "imatrix", "file": "m.imatrix.gguf", "sha256": "c" * 64, "size": 3, "mtime_ns": 5}
    a = _job(tmp_path, "a", {"m-q8_0.gguf": _entry("m-q8_0.gguf", "a" * 64), "m.imatrix.gguf": im},
             {"a" * 64: {"variant": "q8_0"}})
    b = _job(tmp_path, "b", {"m-q4_0.gguf": _entry("m-q4_0.gguf", "b" * 64),
                             "m.imatrix.gguf": {**im, "mtime_ns": 9}}, {"b" * 64: {"variant": "q4_0"}})
    out = merge_results(cfg, [a, b])
    assert out["files"] == ["m-q4_0.gguf", "m-q8_0.gguf", "m.imatrix.gguf"] and out["results"] == 2
    work = WorkDir(cfg.workdir)
    assert set(work.manifest.entries) == set(out["files"])
    assert json.loads((work.results / "bench" / f"{'b' * 64}.json").read_text()) == {"variant": "q4_0"}

    # The same file built by two jobs (a rerun): its build time and peak memory may differ.
    again = {**_entry("m-q4_0.gguf", "b" * 64), "seconds": 7.5, "peak_rss": 123}
    assert merge_results(cfg, [a, b, _job(tmp_path, "b2", {"m-q4_0.gguf": again})])["files"] == out["files"]
    # ... and so may the mtimes of its shards, while their bytes may not.
    def split(mtime: int, sha: str) -> dict:
        return {**_entry("m-q8_0.gguf", "a" * 64), "shards": {"source_sha256": "a" * 64, "max_size": 5, "files": [
            {"file": "m-q8_0-00001-of-00001.gguf", "sha256": sha, "size": 10, "mtime_ns": mtime}]}}
    s1 = _job(tmp_path, "s1", {"m-q8_0.gguf": split(1, "f" * 64)})
    s2 = _job(tmp_path, "s2", {"m-q8_0.gguf": split(2, "f" * 64)})
    assert merge_results(cfg, [s1, s2])["files"] == ["m-q8_0.gguf"]
    with pytest.raises(MergeError, match="m-q8_0.gguf differs between"):
        merge_results(cfg, [s1, _job(tmp_path, "s3", {"m-q8_0.gguf": split(1, "e" * 64)})])
    c = _job(tmp_path, "c", {"m-q4_0.gguf": _entry("m-q4_0.gguf", "d" * 64)})
    with pytest.raises(MergeError, match="m-q4_0.gguf differs between"):
        merge_results(cfg, [a, b, c])
    d = _job(tmp_path, "d", {"m-q4_0.gguf": _entry("m-q4_0.gguf", "b" * 64, source="t" * 64)})
    with pytest.raises(MergeError, match="different sources"):
        merge_results(cfg, [a, d])
    e = _job(tmp_path, "e", {"other.gguf": _entry("other.gguf", "e" * 64)})
    with pytest.raises(MergeError, match="not a file of"):
        merge_results(cfg, [e])
    f = _job(tmp_path, "f", {"../escape.gguf": _entry("../escape.gguf", "e" * 64)})
    with pytest.raises(MergeError, match="not a plain file name"):
        merge_results(cfg, [f])
    with pytest.raises(MergeError, match="no manifest.json"):
        merge_results(cfg, [tmp_path / "nothing"])


def test_export_takes_only_the_job_s_variants(tmp_path):
    (tmp_path / "variants.yaml").write_text(LADDER)
    cfg = load_config(tmp_path / "variants.yaml")
    work = WorkDir(cfg.workdir).prepare()
    m = work.manifest
    entries = {"m-q8_0.gguf": _entry("m-q8_0.gguf", "a" * 64, imatrix={"sha256": "c" * 64}),
               "m-q4_0.gguf": _entry("m-q4_0.gguf", "b" * 64),
               "m.imatrix.gguf": {"kind": "imatrix", "file": "m.imatrix.gguf", "sha256": "c" * 64}}
    m.entries = {name: ManifestEntry.from_json(e) for name, e in entries.items()}
    m.save()
    write_json_atomic(work.results / "bench" / f"{'a' * 64}.json", {"variant": "q8_0"})
    out = export_results(cfg, ["q8_0"], tmp_path / "export")
    assert out["files"] == ["m-q8_0.gguf", "m.imatrix.gguf"] and out["results"] == ["m-q8_0.gguf"]
    assert sorted(p.name for p in (tmp_path / "export" / "results" / "bench").iterdir()) == [f"{'a' * 64}.json"]
    out = export_results(cfg, ["q4_0"], tmp_path / "export2")
    assert out["files"] == ["m-q4_0.gguf"] and out["results"] == []
    m.remove("m-q4_0.gguf")
    assert export_results(cfg, ["q4_0"], tmp_path / "export3")["missing"] == ["q4_0"]


def test_split_publish_options_are_checked(tmp_path):
    (tmp_path / "variants.yaml").write_text(LADDER)
    cfg_path = str(tmp_path / "variants.yaml")
    cases = [(["--no-card", "--card-only"], "exclude each other"), (["--card-only", "--only", "q8_0"], "drop --only"),
             (["--no-card"], "needs --only"), (["--no-card", "--only", "q8_0", "--tag", "v1"], "card job")]
    for args, message in cases:
        result = CliRunner().invoke(main, ["publish", "-c", cfg_path, *args])
        assert result.exit_code == 1 and message in result.output, (args, result.output)
