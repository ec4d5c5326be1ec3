"""Writing variants.yaml files for tests."""

from __future__ import annotations

from pathlib import Path


def write_config(folder: Path, text: str) -> Path:
    """Write a variants.yaml into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "variants.yaml"
    path.write_text(text)
    return path
