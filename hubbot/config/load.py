"""Loading variants.yaml: YAML with line numbers, built-in recipes expanded, then the schema.

Everything that can be checked without the source model is checked here, before any work
starts. Checks that need the model's tensors (rules that match nothing) run in the plan.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from hubbot.config import recipes
from hubbot.config.budgets import expand_auto_variants
from hubbot.config.keys import check_keys
from hubbot.config.schema import Config
from hubbot.config.yaml_lines import LineMap, compose, construct
from hubbot.errors import ConfigError


def _apply_recipes(data: dict, lines: LineMap) -> None:
    """Expand ``recipe:`` into the variant's defaults; keys the user wrote win."""
    for i, variant in enumerate(data.get("variants") or []):
        if not isinstance(variant, dict) or "recipe" not in variant:
            continue
        name = variant["recipe"]
        if name == "auto":
            continue  # chosen per tensor at plan time (hubbot.budget)
        if name not in recipes.BUILTIN_RECIPES:
            known = [*recipes.BUILTIN_RECIPES, "auto"]
            hint = recipes.suggest(str(name), known).replace("; known:", "; built-in recipes:")
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
        if v.is_auto and cfg.imatrix.calibration is None and cfg.has_imatrix_source:
            raise ConfigError(f"{where}: variant {v.name!r} uses recipe: auto, which measures probe builds on "
                              "imatrix.calibration; add that text (next to imatrix.file if you have one)")
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
    node, lines = compose(path)
    # Keys first: a misspelt key is named as itself, and nothing is expanded for a key nobody reads.
    check_keys(node, lines)
    data = construct(node, lines)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with source, target and variants")
    expand_auto_variants(data, lines)
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
