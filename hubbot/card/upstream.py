"""The upstream model card: where hubbot finds it, and its front matter split from its body.

The body is carried into hubbot's card byte for byte (it is never rendered as a template); the
front matter is read as data so the licence and gate keys can be copied exactly.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hubbot.config import Config
from hubbot.errors import CardError
from hubbot.workdir import WorkDir

# Keys of the upstream card that hubbot copies unchanged (plus every ``extra_gated_*`` key).
LICENSE_KEYS = ("license", "license_name", "license_link")


@dataclass
class UpstreamCard:
    """An upstream README split into its metadata and its markdown body."""

    meta: dict[str, Any] = field(default_factory=dict)
    body: str = ""
    origin: str = ""

    @property
    def kept_keys(self) -> dict[str, Any]:
        """The licence keys and every extra_gated_* key, in the upstream's order."""
        return {k: v for k, v in self.meta.items() if k in LICENSE_KEYS or str(k).startswith("extra_gated")}

    @property
    def gated(self) -> bool:
        return any(str(k).startswith("extra_gated") for k in self.meta)


def split_front_matter(text: str, where: str = "upstream card") -> tuple[dict[str, Any], str]:
    """(metadata, body) of a card; a card without front matter has empty metadata."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n") != "---":
        return {}, text
    for i in range(1, len(lines)):
        if lines[i].rstrip("\r\n") == "---":
            head = "".join(lines[1:i])
            body = "".join(lines[i + 1:])
            break
    else:
        raise CardError(f"{where}: the front matter opened with '---' is never closed; add a closing '---' line")
    try:
        meta = yaml.safe_load(head) if head.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 2}" if mark is not None else ""
        raise CardError(f"{where}:{line}: the front matter is not valid YAML ({getattr(exc, 'problem', exc)}); fix it") from None
    if not isinstance(meta, dict):
        raise CardError(f"{where}: the front matter must be a YAML mapping, not {type(meta).__name__}")
    return meta, body


def parse_upstream(text: str, origin: str) -> UpstreamCard:
    meta, body = split_front_matter(text, origin)
    return UpstreamCard(meta=meta, body=body, origin=origin)


def cache_path(cfg: Config) -> Path:
    """Where a fetched copy of the upstream README is kept (the source stage writes it)."""
    return WorkDir(cfg.workdir).cache / "upstream" / "README.md"


def _package_card(package: str) -> Path | None:
    """README.upstream.md shipped in an installed source package (data/ or the package root)."""
    name = package.replace("-", "_")
    if importlib.util.find_spec(name) is None:
        return None
    root = Path(importlib.import_module(name).__file__).parent
    for candidate in (root / "data" / "README.upstream.md", root / "README.upstream.md"):
        if candidate.is_file():
            return candidate
    return None


def upstream_path(cfg: Config) -> Path | None:
    """The upstream card to use: source.card, a source package's copy, then hubbot's cache."""
    if cfg.source.card:
        path = cfg.resolve_path(cfg.source.card)
        if not path.is_file():
            raise CardError(f"source.card {cfg.source.card!r} does not exist ({path}); fix the path or remove the key")
        return path
    if cfg.source.python_package and (found := _package_card(cfg.source.python_package)):
        return found
    cached = cache_path(cfg)
    return cached if cached.is_file() else None


def load_upstream(cfg: Config, path: str | Path | None = None, text: str | None = None) -> UpstreamCard | None:
    """The upstream card from ``text``, ``path``, or the config's usual places; None when there is none."""
    if text is not None:
        return parse_upstream(text, str(path or "upstream card"))
    found = Path(path) if path is not None else upstream_path(cfg)
    if found is None:
        return None
    try:
        raw = found.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CardError(f"cannot read the upstream card {found} ({exc}); check the path") from None
    return parse_upstream(raw, str(found))
