"""A bench result as a typed value: what ``hubbot bench`` stores per file and what the card reads.

The stored form is JSON (``<workdir>/results/bench/<sha256>.json``, and in a job matrix the
artifact each build job hands to the card job), so ``to_json`` writes exactly the keys
``bench.run`` documents and ``from_json`` reads them back, tolerating records written before a
key existed (missing figures are None). Pure data: no numpy, so the card can import it cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Perplexity:
    ppl: float | None
    stderr: float | None
    chunks: int | None
    ctx: int | None
    tokens: int | None  # scored tokens


@dataclass(frozen=True)
class Divergence:
    """KL divergence and top-token agreement against ``reference`` (a variant name)."""

    reference: str | None
    mean: float | None
    median: float | None
    p99: float | None
    max: float | None
    same_top: float | None  # fraction 0..1
    dp_mean: float | None  # change in the correct token's probability (0..1 scale)
    dp_rms: float | None


@dataclass(frozen=True)
class Speed:
    pp: float | None  # prompt processing, tokens/s
    tg: float | None  # generation, tokens/s
    threads: int | None
    repetitions: int | None
    pp_tokens: int | None
    tg_tokens: int | None


def _fields(cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict) or not raw:
        return None
    return cls(**{name: raw.get(name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class BenchResult:
    file: str
    variant: str | None
    sha256: str | None
    size: int | None
    bpw: float | None
    perplexity: Perplexity | None
    kld: Divergence | None
    speed: Speed | None
    settings: dict[str, Any] = field(default_factory=dict)  # quality/speed settings, compared as a whole
    engine: dict[str, Any] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=dict)  # {"name", "sha256"} of the evaluation text

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BenchResult:
        return cls(file=raw.get("file") or "", variant=raw.get("variant"), sha256=raw.get("sha256"),
                   size=raw.get("size"), bpw=raw.get("bpw"),
                   perplexity=_fields(Perplexity, raw.get("perplexity")), kld=_fields(Divergence, raw.get("kld")),
                   speed=_fields(Speed, raw.get("speed")), settings=dict(raw.get("settings") or {}),
                   engine=dict(raw.get("engine") or {}), text=dict(raw.get("text") or {}))

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "variant": self.variant, "sha256": self.sha256, "size": self.size,
                "bpw": self.bpw,
                "perplexity": asdict(self.perplexity) if self.perplexity else None,
                "kld": asdict(self.kld) if self.kld else None,
                "speed": asdict(self.speed) if self.speed else None,
                "settings": self.settings, "engine": self.engine, "text": self.text}

    @property
    def quality_settings(self) -> dict[str, Any]:
        return self.settings.get("quality") or {}

    @property
    def reference_file(self) -> str | None:
        """The file the KLD was measured against, as the quality settings record it."""
        return self.quality_settings.get("reference_file")
