"""What the card stage takes: one typed ``CardInput`` (records.gather builds it from the config,
the manifest and the bench results).

These values cross from the card's input into the templates; fields are always present (``None``
when a fact is unknown) because the templates render with StrictUndefined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubbot.card.upstream import UpstreamCard
from hubbot.config import Config
from hubbot.config.recipes import FLOAT_TYPES

LLAMA_CPP_COMMIT_URL = "https://github.com/ggml-org/llama.cpp/commit/{}"


@dataclass(frozen=True)
class CardSettings:
    """The parts of variants.yaml the card uses."""

    model_name: str
    title: str | None
    repo: str
    upstream_repo: str | None
    quantized_by: str | None
    pipeline_tag: str | None
    language: list[str] | None
    tags: list[str]
    extra: dict[str, Any]
    gated: bool  # target.gated asks for a gate of its own ("auto" or "manual")
    template: str | None  # card.template as written, for messages
    template_path: Path | None  # ... and resolved against the config's folder
    workdir: Path

    @classmethod
    def from_config(cls, cfg: Config) -> CardSettings:
        c = cfg.card
        return cls(model_name=cfg.model_name, title=c.title, repo=cfg.target.repo,
                   upstream_repo=cfg.source.upstream_repo, quantized_by=c.quantized_by,
                   pipeline_tag=c.pipeline_tag, language=c.language, tags=list(c.tags), extra=dict(c.extra),
                   gated=cfg.target.gated in ("auto", "manual"), template=c.template,
                   template_path=cfg.resolve_path(c.template) if c.template else None, workdir=cfg.workdir)


@dataclass(frozen=True)
class FileRef:
    """One published file: a whole GGUF or one shard of it."""

    name: str
    size: int | None
    sha256: str | None


@dataclass
class Measurement:
    """One file's bench figures; ``d_ppl`` is filled in once the reference is known."""

    ppl: float | None
    ppl_stderr: float | None
    kld_mean: float | None
    kld_p99: float | None
    same_top: float | None
    pp: float | None
    tg: float | None
    is_reference: bool
    d_ppl: float | None = None


@dataclass(frozen=True)
class LayerRule:
    """A layer-adaptive rule; ``span`` and ``amount`` are the block selector taken apart for the wording."""

    blocks: str
    span: str  # "all", "edges", "first", "last", "middle", "depth" (a percentage range) or "indices"
    amount: str
    roles: list[str]
    type: str


@dataclass(frozen=True)
class TypeCount:
    type: str
    count: int


@dataclass(frozen=True)
class Fallback:
    change: str  # "Q4_K->Q5_0", as the quantizer reports it
    count: int


@dataclass(frozen=True)
class Engine:
    commit: str | None
    llama_cpp_python: str | None
    ggml_version: str | None

    @property
    def commit_url(self) -> str | None:
        clean = self.commit.split("-")[0] if self.commit else None
        return LLAMA_CPP_COMMIT_URL.format(clean) if clean else None


@dataclass(frozen=True)
class SourceFacts:
    repo: str | None
    revision: str | None
    origin: str | None
    sha256: str | None


@dataclass(frozen=True)
class ImatrixUse:
    """The importance matrix a variant was quantized with."""

    dataset: str | None
    chunks: int | None


@dataclass(frozen=True)
class AutoChange:
    """Tensors of one role moved from the mix's type to another, in ``blocks`` ('' outside the blocks)."""

    role: str
    kind: str  # "raised" (more bits than the mix) or "lowered"
    from_type: str
    to_type: str
    blocks: str  # "0-3, 16, 17"


@dataclass(frozen=True)
class AutoSummary:
    budget: int | None
    budget_text: str | None
    predicted_kld: float | None
    standard_predicted_kld: float | None
    changes: list[AutoChange] = field(default_factory=list)


@dataclass
class VariantRow:
    """One published variant: its files, what the GGUF holds, how it was made and its figures."""

    name: str
    file: str  # the first published file (the whole file or its first shard)
    whole_file: str
    files: list[FileRef]
    type: str
    size: int | None
    bpw: float | None
    n_params: int | None
    sha256: str | None
    output: str | None
    embeddings: str | None
    tied: bool
    description: str | None
    layers: list[LayerRule]
    recipe: str | None
    fallbacks: list[Fallback]
    tensor_types: list[TypeCount]
    labels: list[str]
    result: Measurement | None
    engine: Engine | None
    source: SourceFacts | None
    imatrix_use: ImatrixUse | None
    tag: str | None = None  # the ``repo:TAG`` this file answers to, set once every row is known
    planned: bool = False  # not built yet: size, bits per weight and types are llama.cpp's plan (a preview)
    auto: AutoSummary | None = None  # a recipe: auto file's budget and choice

    @property
    def imatrix(self) -> bool:
        return self.imatrix_use is not None

    @property
    def adaptive(self) -> bool:
        return bool(self.layers)

    @property
    def is_float(self) -> bool:
        return self.type in FLOAT_TYPES

    @property
    def is_standard(self) -> bool:
        """llama.cpp's own mix of its type: neither a layer recipe nor a budget allocation."""
        return not self.adaptive and not self.auto


@dataclass(frozen=True)
class ImatrixFile:
    """The published importance matrix."""

    name: str
    size: int | None
    sha256: str | None
    dataset: str | None
    chunks: int | None
    ctx: int | None
    entries: int | None


@dataclass(frozen=True)
class BenchSettings:
    """How the figures were measured (the same for every file of one bench run)."""

    text: str | None
    ctx: int | None
    chunks: int | None
    tokens: int | None
    reference: str | None
    threads: int | None
    pp_tokens: int | None
    tg_tokens: int | None


@dataclass(frozen=True)
class MissingVariant:
    """A ladder variant the card cannot list: not built, or its file is not among those published
    (a failed build job of a release, or a publish of some variants only)."""

    name: str
    file: str
    type: str


@dataclass
class CardInput:
    """Everything a card is rendered from."""

    settings: CardSettings
    rows: list[VariantRow]
    imatrix: ImatrixFile | None
    bench: BenchSettings | None
    upstream: UpstreamCard | None
    published: list[str] = field(default_factory=list)  # the file names the card may name
    missing: list[MissingVariant] = field(default_factory=list)  # ladder variants without a row, ladder order
