"""Typed manifest entries: what hubbot records about each output file.

``manifest.json`` (see ``hubbot.workdir.Manifest``) maps each file under ``out/`` to one
``ManifestEntry``: a built variant (its recipe, source, imatrix use, tensor types, shards, the
``recipe: auto`` choice) or the published importance matrix (its calibration and size). The same
entries cross machines and modules: `hubbot ci export` writes them into a job's folder and
`hubbot merge` reads them back, the card's records file carries them without the local stamp
(``portable``), `hubbot stage push` hands the staged float variant's entry to the later jobs, and
the preview builds planned ones for files not built yet (``planned``/``published``).

One class with optional fields rather than a class per kind: every reader takes entries of both
kinds from one mapping and asks ``is_variant``; the fields a kind never has stay None.

The JSON stays what earlier versions wrote, byte for byte: ``from_json(d).to_json() == d``. Keys
this version does not know are kept in ``extra`` and written back; a key recorded as null stays
null and an absent one stays absent (``nulls``), so rewriting an older work folder's manifest
changes nothing and rebuilds nothing. A wrongly typed value (a size that is not a number) raises
ValueError, which each reader turns into its one-line error.
"""

from __future__ import annotations

import functools
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Self

# What describes one machine's copy or run of a file rather than the file.
LOCAL_KEYS = ("mtime_ns", "seconds", "peak_rss")


@dataclass(kw_only=True)
class JsonRecord:
    """A JSON object read into typed fields and written back as it was."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys this version does not know
    # The fields written as null when None (None: the writer's default, ``default_nulls``).
    nulls: frozenset[str] | None = field(default=None, repr=False, compare=False)

    def default_nulls(self) -> frozenset[str]:
        """Fields today's writer records as null when they have no value (the others are left out)."""
        return frozenset()

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """The record of a JSON object; ValueError when it is not one or a value has the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__} is {type(data).__name__}, not an object")
        hints = _hints(cls)
        values = {k: _load(hint, data[k], k) for k, hint in hints.items() if k in data}
        try:
            return cls(**values, extra={k: v for k, v in data.items() if k not in hints},
                       nulls=frozenset(k for k in hints if k in data and data[k] is None))
        except TypeError as exc:  # a required key is missing
            raise ValueError(f"{cls.__name__}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        nulls = self.default_nulls() if self.nulls is None else self.nulls
        out = dict(self.extra)
        for name in _hints(type(self)):
            value = getattr(self, name)
            if value is not None:
                out[name] = _dump(value)
            elif name in nulls:
                out[name] = None
        return out

    def without(self, *names: str) -> Self:
        """A copy with these fields dropped: None and not written."""
        nulls = (self.default_nulls() if self.nulls is None else self.nulls) - set(names)
        return replace(self, **{n: None for n in names}, nulls=nulls)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if f.name not in ("extra", "nulls")}


def _load(hint: Any, value: Any, key: str) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, JsonRecord):
        return hint.from_json(value)
    if origin is list and isinstance(value, list):
        return [_load(args[0], v, key) for v in value]
    if origin is dict and isinstance(value, dict):
        return {k: _load(args[1], v, key) for k, v in value.items()}
    # bool is an int to Python, never a size or a count here; an int is a fine float (kept as written).
    wanted = (int, float) if hint is float else hint
    if origin is None and isinstance(value, wanted) and (hint is bool or not isinstance(value, bool)):
        return value
    raise ValueError(f"{key!r} is {value!r}, not {getattr(hint, '__name__', hint)}")


def _dump(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def same_stamp(path: Path, size: int | None, mtime_ns: int | None) -> bool:
    """The file has the size and mtime recorded when it was written: unchanged since (no hashing)."""
    st = os.stat(path)
    return st.st_size == size and st.st_mtime_ns == mtime_ns


@dataclass(kw_only=True)
class Shard(JsonRecord):
    """One shard of a split file (sha256 None in a preview's planned split)."""

    file: str
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None

    def is_fresh(self, folder: Path) -> bool:
        """The shard is in ``folder`` with the size and mtime recorded when it was written."""
        path = folder / self.file
        return path.is_file() and same_stamp(path, self.size, self.mtime_ns)


@dataclass(kw_only=True)
class Shards(JsonRecord):
    """The shards a file was split into, for the whole file of ``source_sha256`` and that limit."""

    source_sha256: str | None = None
    max_size: int | None = None
    files: list[Shard] | None = None

    def default_nulls(self) -> frozenset[str]:
        return frozenset({"max_size"})


@dataclass(kw_only=True)
class SourceRecord(JsonRecord):
    """The source a file was made from (repo and revision None for a local file)."""

    sha256: str | None = None
    repo: str | None = None
    revision: str | None = None
    origin: str | None = None

    def default_nulls(self) -> frozenset[str]:
        return frozenset({"sha256", "repo", "revision", "origin"})


@dataclass(kw_only=True)
class Engine(JsonRecord):
    """The versions that decide a build's bytes (``hubbot.llama.version.engine_version``)."""

    llama_cpp_python: str | None = None
    ggml_commit: str | None = None
    ggml_version: str | None = None
    llama_version: str | None = None


@dataclass(kw_only=True)
class ImatrixUse(JsonRecord):
    """The importance matrix a variant was quantized with."""

    sha256: str | None = None
    file: str | None = None
    dataset: str | None = None
    chunks: int | None = None


@dataclass(kw_only=True)
class AutoRecord(JsonRecord):
    """A ``recipe: auto`` file's choice (``hubbot.budget.choose.AutoChoice.to_json``).

    ``changes``: per role, the tensors raised and lowered against llama.cpp's mix of the same type,
    ``{"role", "raised": [{"block", "from", "to"}], "lowered": [...]}``, grouped by the card.
    """

    budget: int | None = None
    budget_text: str | None = None
    size: int | None = None
    predicted_kld: float | None = None
    standard_predicted_kld: float | None = None
    changes: list[dict[str, Any]] | None = None

    def default_nulls(self) -> frozenset[str]:
        return frozenset({"predicted_kld", "standard_predicted_kld"})


@dataclass(kw_only=True)
class FileFacts(JsonRecord):
    """What a GGUF header says (output/embedding types, tying, tensor-type counts): the card's truth,
    carried in an entry where the file itself is not at hand (a job matrix's card job, a preview)."""

    output: str | None = None
    embeddings: str | None = None
    tied: bool | None = None
    tensor_types: dict[str, int] | None = None

    def default_nulls(self) -> frozenset[str]:
        return frozenset({"output", "embeddings"})


@dataclass(kw_only=True)
class ManifestEntry(JsonRecord):
    """One output file's record: what it is, what it was made from, and its stamp on this machine."""

    kind: str | None = None  # "variant" or "imatrix"
    file: str | None = None
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    input_key: str | None = None  # the build's cache key: same key, same bytes
    engine: Engine | None = None
    source: SourceRecord | None = None
    # A built variant.
    variant: str | None = None
    type: str | None = None
    recipe: dict[str, Any] | None = None  # QuantizeSpec.describe(), kept as the quantizer states it
    output: str | None = None
    embeddings: str | None = None
    description: str | None = None
    imatrix: ImatrixUse | None = None
    tensor_types: dict[str, int] | None = None
    fallbacks: dict[str, str] | None = None  # tensor -> "WANTED->WRITTEN" for shape fallbacks
    n_params: int | None = None
    bpw: float | None = None
    seconds: float | None = None
    peak_rss: int | None = None
    auto: AutoRecord | None = None
    shards: Shards | None = None
    # The published importance matrix.
    dataset: str | None = None
    datasets: list[str] | None = None
    calibration: str | None = None
    chunks: int | None = None
    ctx: int | None = None
    entries: int | None = None
    # Records that travel without the file (`hubbot ci export`, the card's records, the preview).
    file_facts: FileFacts | None = None
    planned: bool | None = None  # a preview's record of a file not built yet
    published: bool | None = None  # a preview's record read from the published card

    def default_nulls(self) -> frozenset[str]:
        return frozenset({"imatrix", "output", "embeddings", "description"} if self.kind == "variant" else ())

    @property
    def is_variant(self) -> bool:
        return self.kind in (None, "variant")

    @property
    def is_imatrix(self) -> bool:
        return self.kind == "imatrix"

    @property
    def shard_files(self) -> list[Shard]:
        return list(self.shards.files or []) if self.shards else []

    @property
    def overrides(self) -> list:
        """The recipe's tensor-type overrides (none recorded: empty)."""
        return list((self.recipe or {}).get("overrides") or [])

    def is_fresh(self, path: Path) -> bool:
        """``path`` has the size and mtime recorded for it: unchanged since it was recorded."""
        return same_stamp(path, self.size, self.mtime_ns)

    def portable(self) -> ManifestEntry:
        """The entry without what describes only this machine's copy (mtime, build time and memory)."""
        shards = self.shards
        if shards is not None and shards.files is not None:
            shards = replace(shards, files=[s.without("mtime_ns") for s in shards.files])
        return replace(self.without(*LOCAL_KEYS), shards=shards)


def read_outputs(data: Any) -> dict[str, ManifestEntry]:
    """The entries of a parsed manifest.json (``{"version", "outputs": {name: entry}}``); ValueError,
    KeyError or TypeError when it is not one."""
    return {str(name): ManifestEntry.from_json(e) for name, e in dict(data["outputs"]).items()}
