"""Limits a build must fit, checked before any work: ``target.max_shard_size`` against the tensors.

A shard holds whole tensors, so a variant whose file is split (it is larger than
``max_shard_size``) cannot honour the limit when one of its tensors alone is larger: the shard
holding it would be too big for the limit the user set (for the Hub, 50 GB per file). The exact
size of every tensor comes from llama.cpp's dry run; that is asked only when the source has a
tensor that could exceed the limit at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from hubbot.build.spec import VariantPlan, tensor_nbytes
from hubbot.config import Config, config_lines, parse_size
from hubbot.errors import ConfigError
from hubbot.source.resolve import ResolvedSource
from hubbot.workdir import human_bytes

# No output tensor is wider than 32-bit floats, whatever the source and the recipe.
_WIDEST_BYTES_PER_WEIGHT = 4


def shard_limit(cfg: Config) -> int | None:
    return parse_size(cfg.target.max_shard_size) if cfg.target.max_shard_size is not None else None


def may_exceed_shard_limit(cfg: Config, source: ResolvedSource) -> bool:
    """False when no tensor of any variant can be larger than ``max_shard_size`` (no dry run needed)."""
    limit = shard_limit(cfg)
    assert source.info is not None
    if limit is None:
        return False
    widest = max((t.n_elements for t in source.info.tensors), default=0) * _WIDEST_BYTES_PER_WEIGHT
    return widest > limit


def check_shard_size(cfg: Config, source: ResolvedSource, plans: Iterable[VariantPlan]) -> None:
    """ConfigError when a variant that will be split has a tensor larger than ``max_shard_size``.

    ``plans`` must come from dry runs (their reports give each tensor's type).
    """
    limit = shard_limit(cfg)
    if limit is None:
        return
    assert source.info is not None
    shapes = {t.name: t.shape for t in source.info.tensors}
    where = config_lines(cfg).where(("target", "max_shard_size"))
    for p in plans:
        if p.report is None or p.tensor_bytes <= limit:
            continue  # unknown, or published whole
        size, name, type_name = max((tensor_nbytes(shapes[t.name], t.type), t.name, t.type) for t in p.report.tensors)
        if size > limit:
            raise ConfigError(
                f"{where}: target.max_shard_size {human_bytes(limit)} is smaller than tensor {name} of variant "
                f"{p.variant.name!r} ({human_bytes(size)} as {type_name}); a shard holds whole tensors, so raise "
                f"max_shard_size to at least {human_bytes(size)}"
            )
