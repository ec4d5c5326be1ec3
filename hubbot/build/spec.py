"""Planning: what each variant will be, before anything is built.

For every variant this compiles the recipe into a ``QuantizeSpec`` (layer rules become
overrides for the source's real block count), checks that every rule matches a tensor,
asks llama.cpp's quantizer for a dry run (the exact type of every tensor, shape fallbacks
included) and works out whether the output on disk is already up to date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import gguf

from hubbot import __version__
from hubbot.budget.choose import AutoChoice, compile_overrides
from hubbot.budget.planner import AutoPlanner
from hubbot.config import Config, VariantConfig, config_lines, recipes
from hubbot.errors import BuildError, ConfigError
from hubbot.gguf_io.info import GGUFInfo
from hubbot.imatrix.ref import ImatrixRef
from hubbot.llama.quantize import QuantizeReport, QuantizeSpec, quantize
from hubbot.llama.version import engine_version
from hubbot.source.resolve import ResolvedSource
from hubbot.workdir import WorkDir, canonical_json, sha256_text

_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")


@dataclass
class VariantPlan:
    variant: VariantConfig
    file_name: str
    spec: QuantizeSpec
    input_key: str
    imatrix: ImatrixRef | None
    report: QuantizeReport | None = None
    tensor_bytes: int = 0
    n_params: int = 0
    up_to_date: bool = False
    standard_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    auto: AutoChoice | None = None  # recipe: auto: the budget and the allocation
    budget_bytes: int | None = None  # recipe: auto before its sensitivity is measured: the size it may take
    estimate_types: dict[str, str] = field(default_factory=dict)  # ... and the types it is priced at

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * (self.tensor_bytes or self.budget_bytes or 0) / max(1, self.n_params)

    def block_table(self) -> dict[str, dict[int, str]]:
        """role -> block -> tensor type, from the dry run."""
        table: dict[str, dict[int, str]] = {}
        for t in self.report.tensors if self.report else []:
            if m := _BLOCK_TENSOR.match(t.name):
                table.setdefault(m.group(2), {})[int(m.group(1))] = t.type
        return table

    def outside_blocks(self) -> dict[str, str]:
        """Quantized tensors outside the blocks (token embedding, output) -> type, from the dry run."""
        return {t.name.removesuffix(".weight"): t.type for t in (self.report.tensors if self.report else [])
                if not _BLOCK_TENSOR.match(t.name) and t.type not in recipes.FLOAT_TYPES}

    def to_json(self) -> dict[str, Any]:
        v = self.variant
        return {
            "name": v.name, "file": self.file_name, "type": v.type,
            "output": self.spec.output_type, "embeddings": self.spec.embeddings_type,
            "imatrix": bool(self.imatrix) if v.uses_imatrix else False,
            "needs_imatrix": v.needs_imatrix,
            "tensor_types": self.report.type_counts if self.report else None,
            "fallbacks": len(self.report.fallbacks) if self.report else None,
            "size": self.tensor_bytes, "bpw": round(self.bits_per_weight, 4),
            "standard_size": self.standard_bytes, "budget": self.budget_bytes,
            "up_to_date": self.up_to_date, "input_key": self.input_key,
            "description": v.description,
            "auto": self.auto.to_json() if self.auto else None, "notes": self.notes,
        }


def tensor_nbytes(shape: tuple[int, ...], type_name: str) -> int:
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def header_bytes(source: ResolvedSource) -> int:
    """Metadata and alignment bytes of the source: the outputs carry the same tokenizer and keys."""
    assert source.info is not None
    return max(0, source.path.stat().st_size - source.info.tensor_bytes)


def placeholder_imatrix(info: GGUFInfo) -> dict:
    import numpy as np

    return {t.name: np.ones(t.shape[0], dtype=np.float32) for t in info.tensors
            if t.name.startswith("blk.") and len(t.shape) == 2}


def check_rules(cfg: Config, info: GGUFInfo) -> None:
    """ConfigError for any override or layer rule that selects no tensor of this model."""
    lines = config_lines(cfg)
    names = [t.name for t in info.tensors]
    for i, v in enumerate(cfg.variants):
        for j, o in enumerate(v.tensors):
            if not any(re.search(o.pattern, n) for n in names):
                raise ConfigError(
                    f"{lines.where(('variants', i, 'tensors', j))}: pattern {o.pattern!r} of variant "
                    f"{v.name!r} matches no tensor of {info.path.name}; fix the regex (names look like blk.0.attn_q.weight)"
                )
        for j, rule in enumerate(v.layers):
            highest = recipes.highest_block(rule.blocks)
            if highest is not None and highest >= info.block_count:
                # Cutting the list silently would build a different mix than the one written.
                raise ConfigError(
                    f"{lines.where(('variants', i, 'layers', j))}: layer rule {rule.blocks!r} -> {rule.type} of "
                    f"variant {v.name!r} names block {highest}, but {info.path.name} has {info.block_count} blocks "
                    f"(0-{info.block_count - 1}); fix the indices, or use a share such as 'first 25%'"
                )
            blocks = recipes.select_blocks(rule.blocks, info.block_count)
            hits = [n for n in names for b in blocks for r in rule.roles if n == f"blk.{b}.{r}.weight"]
            if not hits:
                raise ConfigError(
                    f"{lines.where(('variants', i, 'layers', j))}: layer rule {rule.blocks!r} -> {rule.type} of "
                    f"variant {v.name!r} selects no tensor in this {info.block_count}-block model; widen the blocks or roles"
                )


def build_metadata(cfg: Config, source: ResolvedSource, imatrix: ImatrixRef | None) -> list[tuple[str, Any]]:
    """The header keys a build adds: who quantized it, with what, from which source and matrix."""
    meta: list[tuple[str, Any]] = [("general.quantized_by", cfg.card.quantized_by or "hubbot"),
                                   ("hubbot.version", __version__)]
    if source.repo:
        meta.append(("hubbot.source.repo", source.repo))
    if source.revision:
        meta.append(("hubbot.source.revision", source.revision))
    meta.append(("hubbot.source.sha256", source.sha256))
    if imatrix is not None:
        meta += imatrix.metadata()
    return meta


def make_spec(cfg: Config, v: VariantConfig, source: ResolvedSource, imatrix: ImatrixRef | None, threads: int,
              auto: AutoChoice | None = None) -> QuantizeSpec:
    assert source.info is not None
    overrides = [recipes.TensorOverride(t.pattern, t.type) for t in v.tensors]
    if auto is not None:  # every quantized tensor named: llama.cpp's mixing rules have no say
        overrides = compile_overrides(auto.types())
    rules = [recipes.LayerRule(r.blocks, r.type, tuple(r.roles)) for r in v.layers]
    overrides += recipes.compile_layer_rules(rules, source.info.block_count)
    # Explicit types skip llama.cpp's shape fallbacks (and abort on misfit rows): fit them here.
    row_lengths = {t.name: t.shape[0] for t in source.info.tensors if len(t.shape) >= 2}
    overrides = recipes.fit_overrides(overrides, row_lengths)
    embd_rows = row_lengths.get("token_embd.weight", 0)
    out_rows = row_lengths.get("output.weight", embd_rows)  # tied: token_embd takes the output type
    output_type = recipes.fit_type(v.output, out_rows) if v.output and out_rows else v.output
    embeddings_type = recipes.fit_type(v.embeddings, embd_rows) if v.embeddings and embd_rows else v.embeddings
    return QuantizeSpec(
        file_type=v.type, output_type=output_type, embeddings_type=embeddings_type,
        overrides=tuple(overrides), pure=v.pure,
        allow_requantize=cfg.source.allow_requantize, metadata=tuple(build_metadata(cfg, source, imatrix)),
        threads=threads,
    )


def input_key(spec: QuantizeSpec, source: ResolvedSource, imatrix: ImatrixRef | None) -> str:
    """Content key of everything that decides the output bytes."""
    return sha256_text(canonical_json({
        "source": source.sha256, "recipe": spec.describe(),
        "imatrix": imatrix.sha256 if imatrix else None, "engine": engine_version(),
    }))


def check_auto_types(v: VariantConfig, auto: AutoChoice, report: QuantizeReport) -> None:
    """BuildError when llama.cpp would write another type than the allocation chose (a fallback surprise)."""
    chosen = auto.types()
    wrong = {t.name: f"{chosen[t.name]}->{t.type}" for t in report.tensors if t.name in chosen and t.type != chosen[t.name]}
    if wrong:
        name, change = next(iter(wrong.items()))
        raise BuildError(f"variant {v.name!r}: llama.cpp would not write the chosen types ({len(wrong)} tensors, "
                         f"e.g. {name} {change}); this is a bug in recipe: auto, please report it")


def is_up_to_date(work: WorkDir, file_name: str, key: str) -> bool:
    entry = work.manifest.get(file_name)
    path = work.out / file_name
    if not entry or entry.input_key != key:
        return False
    if not path.is_file():
        # A staged float file fetched as its shards (`hubbot stage fetch`): the shards are the file.
        shards = entry.shard_files
        return bool(shards) and all(s.is_fresh(work.out) for s in shards)
    # Size and mtime as recorded at build time: a file touched since is re-hashed by build.
    return entry.is_fresh(path)


def plan_variant(cfg: Config, v: VariantConfig, source: ResolvedSource, work: WorkDir,
                 imatrix: ImatrixRef | None, threads: int, *, dry_run: bool = True,
                 compare_standard: bool = False, planner: AutoPlanner | None = None) -> VariantPlan:
    use_im = imatrix if v.uses_imatrix else None
    auto = None
    if v.is_auto:
        assert planner is not None, "recipe: auto variants are planned with an AutoPlanner"
        metadata = build_metadata(cfg, source, use_im)
        auto = planner.choose(cfg.variants.index(v), v, metadata)
    spec = make_spec(cfg, v, source, use_im, threads, auto)
    key = input_key(spec, source, use_im)
    p = VariantPlan(v, cfg.file_name(v), spec, key, use_im, auto=auto)
    if v.is_auto and auto is None:
        p.notes.append("the sensitivity is not measured yet: `hubbot build` (or `hubbot plan --measure`) measures it")
        p.up_to_date = False
        assert planner is not None
        # The types are not chosen yet, but the size is bounded: the job sizing counts the budget.
        p.budget_bytes = planner.budget(cfg.variants.index(v), v, metadata)
        p.n_params = source.info.n_params if source.info else 0
        if dry_run:  # the job sizing prices its quantizing at the standard mix's types meanwhile
            p.estimate_types = dict(planner.standard(v.type)[0])
        return p
    p.up_to_date = is_up_to_date(work, p.file_name, key)
    assert source.info is not None
    p.n_params = source.info.n_params
    shapes = {t.name: t.shape for t in source.info.tensors}
    if dry_run:
        values = None
        if use_im is not None:
            values = use_im.values
        elif v.needs_imatrix:
            # A dry run never reads imatrix values, but llama.cpp insists they exist for these
            # types: plan with neutral weights until the real matrix is computed.
            p.notes.append("the importance matrix is not computed yet")
            values = placeholder_imatrix(source.info)
        p.report = quantize(source.path, work.cache / "dry-run.gguf", spec, values, dry_run=True)
        if auto is not None:
            check_auto_types(v, auto, p.report)
        p.tensor_bytes = sum(tensor_nbytes(shapes[t.name], t.type) for t in p.report.tensors) + header_bytes(source)
        if compare_standard and (v.layers or v.tensors or v.output or v.embeddings or v.is_auto):
            std = QuantizeSpec(file_type=v.type, threads=threads, allow_requantize=spec.allow_requantize)
            std_report = quantize(source.path, work.cache / "dry-run.gguf", std, values, dry_run=True)
            p.standard_bytes = sum(tensor_nbytes(shapes[t.name], t.type) for t in std_report.tensors) + header_bytes(source)
    return p
