"""A staged source: the float GGUF a release's convert job pushed to the target repo, fetched here.

``hubbot stage fetch`` downloads it, checks its sha256 and records it in
``<workdir>/cache/staged-source.json``; ``resolve_source`` then uses that file and reports the
*original* source's sha256, repo, revision and origin, which the convert job recorded. Build keys
(``input_key``), manifest entries and the card therefore come out exactly as on a machine that
converted the source itself, while this machine never downloads the safetensors.

The float variant in the source's dtype holds the same tensors as the converted source (a
BF16 → BF16 "quantization" copies every tensor), and the quantizer rewrites the two keys it
differs in (``general.file_type``, ``general.quantization_version``), so a variant built from it
has the same bytes; tests/test_release_flow.py checks that against a single-machine publish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hubbot.config import Config
from hubbot.workdir import canonical_json, sha256_text, write_json_atomic

RECORD = "staged-source.json"


def source_key(cfg: Config) -> str:
    """What the staged file stands for: the source section of the config (not the ladder)."""
    return sha256_text(canonical_json(cfg.source.model_dump(mode="json")))[:16]


@dataclass(frozen=True)
class StagedSource:
    path: Path
    size: int
    sha256: str  # the original source's sha256 (what build keys are made of)
    origin: str
    repo: str | None
    revision: str | None
    key: str

    def to_json(self) -> dict:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256, "origin": self.origin,
                "repo": self.repo, "revision": self.revision, "source_key": self.key}


def record_staged(cache: Path, staged: StagedSource) -> Path:
    path = cache / RECORD
    write_json_atomic(path, staged.to_json())
    return path


def staged_source(cfg: Config, cache: Path) -> StagedSource | None:
    """The registered staged source for this config's source section, if its file is still there."""
    try:
        data = json.loads((cache / RECORD).read_text(encoding="utf-8"))
        staged = StagedSource(path=Path(data["path"]), size=int(data["size"]), sha256=data["sha256"],
                              origin=data["origin"], repo=data.get("repo"), revision=data.get("revision"),
                              key=data["source_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if staged.key != source_key(cfg) or not staged.path.is_file() or staged.path.stat().st_size != staged.size:
        return None
    return staged
