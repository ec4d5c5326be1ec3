"""The card's YAML metadata: built as data in a fixed key order, the upstream's licence and gate
keys copied exactly, the upstream's subject tags kept and its tool tags dropped."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from hubbot.card.inputs import CardSettings
from hubbot.card.upstream import UpstreamCard
from hubbot.errors import CardError

# Upstream tags that say how the upstream repo was made, not what the model is. They were true of
# the upstream's files and are false of ours (hubbot made these, with its own tags), so the card
# does not inherit them; the Hub would otherwise list this repo under another publisher's tool.
# Compared case-insensitively, with '_', '.' and spaces read as '-' ("llama.cpp" = "llama-cpp").
TOOL_TAGS = frozenset({
    "gguf-my-repo",            # ggml-org's GGUF-my-repo space converted the upstream to GGUF
    "mlx-my-repo",             # ... and its MLX counterpart
    "llama-cpp",               # converted with llama.cpp (hubbot says how it used llama.cpp in the card)
    "autotrain",               # trained with Hugging Face AutoTrain
    "autotrain-compatible",    # the Hub's flag for AutoTrain-loadable (transformers) weights
    "mergekit", "merge",       # the tags mergekit writes on a merged model
    "unsloth",                 # fine-tuned with Unsloth
    "trl", "axolotl",          # fine-tuned with TRL / axolotl
    "generated-from-trainer",  # written by transformers' Trainer when it pushes a checkpoint
})
_SEPARATORS = re.compile(r"[\s._]+")


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def is_tool_tag(tag: str) -> bool:
    return _SEPARATORS.sub("-", tag.strip().lower()) in TOOL_TAGS


def subject_tags(upstream_tags: Any) -> list[str]:
    """The upstream card's tags without its tool tags (a single tag may be written as a string)."""
    tags = [upstream_tags] if isinstance(upstream_tags, str) else list(upstream_tags or [])
    return [str(t) for t in tags if not is_tool_tag(str(t))]


def front_matter(settings: CardSettings, upstream: UpstreamCard | None, uses_imatrix: bool) -> dict[str, Any]:
    """The card's YAML metadata, in a fixed key order; the upstream licence and gate keys copied exactly."""
    up = upstream.meta if upstream else {}
    meta: dict[str, Any] = dict(upstream.kept_keys) if upstream else {}
    base = settings.upstream_repo
    if base:
        meta["base_model"] = base
        meta["base_model_relation"] = "quantized"
    if settings.quantized_by:
        meta["quantized_by"] = settings.quantized_by
    meta["library_name"] = "gguf"
    pipeline = settings.pipeline_tag or up.get("pipeline_tag")
    if pipeline:
        meta["pipeline_tag"] = pipeline
    language = settings.language or up.get("language")
    if language:
        meta["language"] = language
    # The user's own card.tags are kept whatever they say: the filter is for inherited tags only.
    meta["tags"] = _unique([*subject_tags(up.get("tags")), *settings.tags, "gguf",
                            *(["imatrix"] if uses_imatrix else []), "quantized"])
    for key, value in settings.extra.items():
        if upstream and key in upstream.kept_keys and upstream.kept_keys[key] != value:
            raise CardError(f"card.extra.{key} would change the upstream card's {key}; remove it (hubbot keeps the upstream value)")
        meta[key] = value
    return meta


def dump_front_matter(meta: dict[str, Any]) -> str:
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
