"""The variants.yaml schema: strict pydantic models, one per section.

Unknown keys, wrong types and impossible values fail here; ``load.py`` turns those failures into
one-line messages with the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from hubbot.config import recipes
from hubbot.config.budgets import BUDGET_HINT, BudgetConfig, SensitivityConfig
from hubbot.config.sizes import parse_size
from hubbot.config.yaml_lines import LineMap
from hubbot.errors import ConfigError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextFile(Strict):
    """A text file: local (``path``) or in a Hub dataset repo (``repo`` + ``file``)."""

    path: str | None = None
    repo: str | None = None
    file: str | None = None
    revision: str | None = None
    repo_type: Literal["dataset", "model"] = "dataset"
    name: str | None = Field(None, description="name shown on the card")

    @model_validator(mode="after")
    def _one_place(self) -> "TextFile":
        if bool(self.path) == bool(self.repo):
            raise ValueError("give either 'path' or 'repo' + 'file'")
        if self.repo and not self.file:
            raise ValueError("a Hub text source needs 'file' as well as 'repo'")
        return self

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.repo:
            return f"{self.repo}/{self.file}"
        return Path(self.path or "").name


class ConverterConfig(Strict):
    """The isolated venv that runs llama.cpp's HF-to-GGUF converter (safetensors sources only)."""

    venv: str | None = Field(None, description="venv folder; default $HUBBOT_CONVERTER_VENV or ~/.cache/hubbot/converter-venv")
    torch: str = Field("torch==2.13.0", description="pip requirement for torch in that venv (a CPU build is enough)")


class SourceConfig(Strict):
    """Where the full-precision model comes from."""

    path: str | None = None
    repo: str | None = None
    file: str | None = None
    revision: str | None = None
    python_package: str | None = Field(None, description="an installed package that ships a GGUF")
    dtype: Literal["bf16", "f16"] = "bf16"
    dequantize: bool = Field(False, description="expand a quantized GGUF source to dtype first")
    allow_requantize: bool = False
    base_model: str | None = Field(None, description="upstream repo id for the card")
    card: str | None = Field(None, description="local copy of the upstream README")
    converter: ConverterConfig = ConverterConfig()

    @model_validator(mode="after")
    def _one_kind(self) -> "SourceConfig":
        kinds = [k for k in ("path", "repo", "python_package") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("give exactly one of 'path', 'repo' (with optional 'file') or 'python_package'")
        if self.file and not self.repo:
            raise ValueError("'file' needs 'repo'")
        return self

    @property
    def upstream_repo(self) -> str | None:
        return self.base_model or self.repo


class TargetConfig(Strict):
    repo: str
    private: bool = False
    gated: Literal["auto", "manual", "inherit"] | bool = "inherit"
    endpoint: str | None = None
    max_shard_size: int | str | None = None

    @field_validator("repo")
    @classmethod
    def _repo_id(cls, v: str) -> str:
        bad = sorted({c for c in v if not (c.isascii() and (c.isalnum() or c in "-_./"))})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            raise ValueError(f"target repo {v!r} contains characters a Hub repo name cannot have ({shown}): "
                             "use letters, digits, '-', '_' and '.' in 'owner/name'")
        if not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", v):
            raise ValueError(f"target repo {v!r} is not of the form 'owner/name'")
        return v

    @field_validator("max_shard_size")
    @classmethod
    def _size(cls, v):
        if v is not None and parse_size(v) <= 0:
            raise ValueError("max_shard_size must be positive")
        return v


class CardConfig(Strict):
    model_name: str | None = Field(None, description="file-name stem; default: the source repo's name")
    title: str | None = None
    quantized_by: str | None = None
    template: str | None = None
    language: list[str] | None = None
    tags: list[str] = []
    pipeline_tag: str | None = None
    extra: dict[str, Any] = {}

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, v: str | None) -> str | None:
        # Every file name starts with it (and the imatrix is <model_name>.imatrix.gguf): caught here,
        # not when the first file would be written outside the output folder.
        if v is not None and (not _SAFE_NAME.match(v) or ".." in v):
            raise ValueError(f"card.model_name {v!r} starts every file name, so it may only hold letters, digits, "
                             "'.', '_' and '-' (no folders); use a plain name, and 'file:' on a variant to choose "
                             "that variant's whole file name")
        return v


class ImatrixConfig(Strict):
    calibration: TextFile | None = None
    file: str | None = Field(None, description="a ready importance matrix (GGUF or legacy .dat)")
    ctx: int = Field(512, ge=32)
    chunks: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    gpu_layers: int = Field(0, ge=-1, description="layers to offload when llama-cpp-python has a GPU backend (-1: all)")


class BenchmarkConfig(Strict):
    text: TextFile | None = None
    ctx: int = Field(512, ge=32)
    chunks: int | None = Field(None, ge=2)
    batch_chunks: int = Field(4, ge=1)
    threads: int | None = Field(None, ge=1)
    speed: bool = True
    repetitions: int = Field(3, ge=1)
    reference: str | None = None
    gpu_layers: int = Field(0, ge=-1, description="layers to offload when llama-cpp-python has a GPU backend (-1: all)")


class BuildConfig(Strict):
    workdir: str = ".hubbot"
    threads: int | None = Field(None, ge=1)


class TensorOverrideConfig(Strict):
    pattern: str
    type: str

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"pattern {v!r} is not a valid regex ({exc})") from None
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        return recipes.normalize_tensor_type(v)


class LayerRuleConfig(Strict):
    blocks: str
    type: str
    roles: list[str] = list(recipes.ROLES)

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, v: str) -> str:
        recipes.check_block_spec(v)
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        return recipes.normalize_tensor_type(v)

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        for role in v:
            if role not in recipes.ROLES:
                raise ValueError(f"unknown tensor role {role!r}; roles are {', '.join(recipes.ROLES)}")
        return v


class VariantConfig(Strict):
    name: str
    type: str
    recipe: str | None = None
    file: str | None = None
    output: str | None = None
    embeddings: str | None = None
    tensors: list[TensorOverrideConfig] = []
    layers: list[LayerRuleConfig] = []
    pure: bool = False
    imatrix: Literal["auto", "required", "off"] = "auto"
    description: str | None = None
    budget: BudgetConfig | None = None

    @model_validator(mode="after")
    def _auto(self) -> "VariantConfig":
        if self.recipe == "auto":
            if self.budget is None:
                raise ValueError(f"recipe: auto needs a budget; {BUDGET_HINT}")
            chosen = [k for k in ("output", "embeddings", "tensors", "layers", "pure") if getattr(self, k)]
            if chosen:
                raise ValueError(f"recipe: auto chooses every tensor's type itself; remove {', '.join(repr(k) for k in chosen)}")
            if self.imatrix == "off":
                raise ValueError("recipe: auto weighs errors with the importance matrix; remove 'imatrix: off'")
        elif self.budget is not None:
            raise ValueError("a budget only applies to 'recipe: auto'; add it or remove 'budget'")
        return self

    @property
    def is_auto(self) -> bool:
        return self.recipe == "auto"

    @field_validator("imatrix", mode="before")
    @classmethod
    def _imatrix_bool(cls, v):
        # YAML 1.1 reads a bare `off`/`on` as a boolean.
        return {False: "off", True: "required"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SAFE_NAME.match(v) or ".." in v:
            raise ValueError(f"variant name {v!r} may only hold letters, digits, '.', '_' and '-'")
        return v

    @field_validator("file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        if v is not None and (not _SAFE_NAME.match(v) or ".." in v or not v.endswith(".gguf")):
            raise ValueError(f"file {v!r} must be a plain file name ending in .gguf (no folders)")
        return v

    @field_validator("type")
    @classmethod
    def _ftype(cls, v: str) -> str:
        return recipes.normalize_file_type(v)

    @field_validator("output", "embeddings")
    @classmethod
    def _ttype(cls, v: str | None) -> str | None:
        return None if v is None else recipes.normalize_tensor_type(v)

    def tensor_types_used(self) -> set[str]:
        used = {t.type for t in self.tensors} | {r.type for r in self.layers}
        used |= {t for t in (self.output, self.embeddings) if t}
        return used

    @property
    def needs_imatrix(self) -> bool:
        """True when llama.cpp would refuse to build this variant without an imatrix."""
        return self.is_auto or recipes.file_type_needs_imatrix(self.type) or bool(
            self.tensor_types_used() & recipes.TENSOR_TYPES_NEEDING_IMATRIX
        )

    @property
    def uses_imatrix(self) -> bool:
        """Whether the build passes an imatrix: always when one helps, unless 'off'."""
        return self.imatrix != "off" and self.type not in recipes.FLOAT_TYPES


class Config(Strict):
    source: SourceConfig
    target: TargetConfig
    card: CardConfig = CardConfig()
    imatrix: ImatrixConfig = ImatrixConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    build: BuildConfig = BuildConfig()
    sensitivity: SensitivityConfig = SensitivityConfig()
    variants: list[VariantConfig]

    # Set by load_config, not by users.
    _path: Path = PrivateAttr(default=Path("variants.yaml").resolve())
    _lines: LineMap | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def model_name(self) -> str:
        if self.card.model_name:
            return self.card.model_name
        for candidate in (self.source.repo, self.source.base_model, self.source.path, self.source.python_package):
            if candidate:
                return Path(candidate).name.removesuffix(".gguf")
        return "model"

    @property
    def workdir(self) -> Path:
        return (self.base_dir / self.build.workdir).resolve()

    def resolve_path(self, p: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        return (self.base_dir / p).resolve() if not Path(p).is_absolute() else Path(p)

    def file_name(self, v: VariantConfig) -> str:
        return v.file or f"{self.model_name}-{v.name}.gguf"

    def variant(self, name: str) -> VariantConfig:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(f"{self.path}: no variant named {name!r}; known: {', '.join(x.name for x in self.variants)}")

    @property
    def has_imatrix_source(self) -> bool:
        return bool(self.imatrix.file or self.imatrix.calibration)
