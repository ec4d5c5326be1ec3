"""Pytest fixtures for publishing tests: the local Hub on 127.0.0.1, tokens, fast retries, tiny ladders.

A pytest plugin (registered in tests/conftest.py): ``local_hub`` and the autouse ``fast_retries``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hubbot.hub import client as hubclient
from hubbot.testing.localhub import LocalHub

WRITE_TOKEN = "hf_TESTSECRET_write_5c0ffee5c0ffee"
READ_TOKEN = "hf_TESTSECRET_read_0ddba11"
OTHER_TOKEN = "hf_TESTSECRET_other_feedface"
USER = "hubbot-test"


@pytest.fixture
def local_hub(tmp_path_factory, monkeypatch):
    """A LocalHub with a write token (USER), a read-only token and another user's token; HF_TOKEN set to the writer."""
    from huggingface_hub import constants

    # The local hub speaks LFS only; huggingface_hub read HF_HUB_DISABLE_XET before conftest set it.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    hub = LocalHub(tmp_path_factory.mktemp("hubstore"))
    hub.add_token(WRITE_TOKEN, USER, write=True)
    hub.add_token(READ_TOKEN, USER, write=False)
    hub.add_token(OTHER_TOKEN, "someone-else", write=True)
    hub.start()
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    yield hub
    hub.close()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    """hubbot's own retries wait 10 ms per step (and record the waits) instead of seconds."""
    waits: list[float] = []

    def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(hubclient, "sleep", fake_sleep)
    monkeypatch.setattr(hubclient, "RETRY_BASE_SECONDS", 0.01)
    return waits


def tiny_ladder_yaml(source: Path, repo: str = f"{USER}/tiny-GGUF", variants: str | None = None,
                     extra: str = "") -> str:
    """variants.yaml text for a two-variant ladder of the tiny synthetic model."""
    variants = variants or (
        "  - name: q8_0\n    type: Q8_0\n"
        "  - name: q4_0\n    type: Q4_0\n"
    )
    return (
        f"source:\n  path: {source}\n"
        f"target:\n  repo: {repo}\n  gated: false\n{extra}"
        "card:\n  model_name: tiny\n"
        f"variants:\n{variants}"
    )
