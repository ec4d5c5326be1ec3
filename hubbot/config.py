"""The variants.yaml schema: loading and strict validation with file:line messages.

Everything that can be checked without the source model is checked here, before any work
starts. Checks that need the model's tensors (rules that match nothing) run in ``plan``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from . import recipes
from .errors import ConfigError
from .yamlsource import LineMap, load_with_lines

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(value: int | str) -> int:
    """Bytes in ``value``: an int, or a string such as '50GB' or '1.5GiB'."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"cannot read size {value!r}; write it like '50GB' or '2GiB'")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "B").upper()])


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
        return recipes.file_type_needs_imatrix(self.type) or bool(
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


def _apply_recipes(data: dict, lines: LineMap) -> None:
    """Expand ``recipe:`` into the variant's defaults; keys the user wrote win."""
    for i, variant in enumerate(data.get("variants") or []):
        if not isinstance(variant, dict) or "recipe" not in variant:
            continue
        name = variant["recipe"]
        if name not in recipes.BUILTIN_RECIPES:
            hint = recipes.suggest(str(name), recipes.BUILTIN_RECIPES).replace("; known:", "; built-in recipes:")
            raise ConfigError(f"{lines.where(('variants', i, 'recipe'))}: unknown recipe {name!r}{hint}")
        merged = dict(recipes.BUILTIN_RECIPES[name])
        merged.update(variant)
        data["variants"][i] = merged


def _format_error(err: dict, lines: LineMap) -> str:
    loc = tuple(err["loc"])
    # Pydantic appends the union member or validator name to loc; drop what isn't a key.
    clean = tuple(x for x in loc if isinstance(x, int) or not str(x).startswith(("function-", "literal[", "str", "int", "bool")))
    msg = err["msg"].removeprefix("Value error, ")
    field = ".".join(str(x) for x in clean)
    if err["type"] == "extra_forbidden":
        parent = clean[:-1]
        msg = f"unknown key {clean[-1]!r}" + (f" in {'.'.join(map(str, parent))}" if parent else "") + "; remove it or check the spelling"
    elif err["type"] == "missing":
        msg = f"missing required key {field!r}"
    elif field and field not in msg:
        msg = f"{field}: {msg}"
    return f"{lines.where(clean)}: {msg}"


def _check_ladder(cfg: Config, lines: LineMap) -> None:
    seen_names: dict[str, int] = {}
    seen_files: dict[str, int] = {}
    for i, v in enumerate(cfg.variants):
        where = lines.where(("variants", i))
        if v.name in seen_names:
            raise ConfigError(f"{where}: duplicate variant name {v.name!r} (also variant {seen_names[v.name] + 1}); names must be unique")
        seen_names[v.name] = i
        fname = cfg.file_name(v).lower()
        if fname in seen_files:
            raise ConfigError(f"{where}: file name {cfg.file_name(v)!r} is also produced by variant {seen_files[fname] + 1}; give one of them another name or 'file'")
        seen_files[fname] = i
        if v.needs_imatrix:
            if v.imatrix == "off":
                raise ConfigError(f"{where}: variant {v.name!r} uses types that need an importance matrix ({v.type}) but sets imatrix: off; remove that or pick another type")
            if not cfg.has_imatrix_source:
                raise ConfigError(
                    f"{where}: variant {v.name!r} needs an importance matrix; add imatrix.calibration (a text file) "
                    "or imatrix.file (a ready imatrix) to the config"
                )
        if v.imatrix == "required" and not cfg.has_imatrix_source:
            raise ConfigError(f"{where}: variant {v.name!r} sets imatrix: required but the config has no imatrix.calibration or imatrix.file")
    if not cfg.variants:
        raise ConfigError(f"{lines.where(('variants',))}: the ladder is empty; add at least one variant")
    ref = cfg.benchmark.reference
    if ref and ref not in seen_names:
        raise ConfigError(f"{lines.where(('benchmark', 'reference'))}: benchmark.reference names no variant ({ref!r})")


def load_config(path: str | Path) -> Config:
    """Load and validate variants.yaml; every problem is a one-line ConfigError."""
    path = Path(path)
    data, lines = load_with_lines(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with source, target and variants")
    _apply_recipes(data, lines)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc.errors()[0], lines)) from None
    cfg._path = path.resolve()
    cfg._lines = lines
    _check_ladder(cfg, lines)
    return cfg


def config_lines(cfg: Config) -> LineMap:
    """Line map of a loaded config, for errors found later (e.g. rules matching nothing)."""
    return cfg._lines or LineMap(str(cfg.path))
