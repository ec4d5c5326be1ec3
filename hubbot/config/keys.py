"""Unknown keys, found in the YAML node tree before any value is built or validated.

Checking the keys first has two uses: a misspelt key (``tpye:``) is reported as itself, with
the key it was probably meant to be, instead of as the required key it left missing; and a
file whose values would take long to build (nested aliases under a key the schema does not
know) is refused at once. The walk follows the schema's models and visits each node once, so
aliases cost nothing here.
"""

from __future__ import annotations

import difflib
import types
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from hubbot.config.schema import Config
from hubbot.config.yaml_lines import KeyPath, LineMap
from hubbot.errors import ConfigError


def _nested(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """("model", M) for a field holding model M, ("list", M) for a list of M; None for plain values."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return next((found for arg in get_args(annotation) if (found := _nested(arg))), None)
    if origin is list:
        inner = get_args(annotation)[0] if get_args(annotation) else None
        return ("list", inner) if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    return None


def unknown_key_message(key: str, known: list[str], parent: KeyPath) -> str:
    """'unknown key ...' with the closest known key, or what to do when there is none."""
    where = f" in {'.'.join(map(str, parent))}" if parent else ""
    if key == "<<":
        return f"YAML merge keys ('<<'){where} are not supported; write the keys out"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}{where}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}{where}; remove it or check the spelling (known keys: {', '.join(known)})"


def _walk(node: yaml.Node, model: type[BaseModel], path: KeyPath, lines: LineMap, seen: set) -> None:
    if not isinstance(node, yaml.MappingNode) or (id(node), model) in seen:
        return  # wrong shapes are the schema's to report; an aliased node is checked once
    seen.add((id(node), model))
    fields = model.model_fields
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue  # the loader reports non-string keys
        key = key_node.value
        if key not in fields:
            raise ConfigError(f"{lines.filename}:{key_node.start_mark.line + 1}: "
                              f"{unknown_key_message(key, list(fields), path)}")
        nested = _nested(fields[key].annotation)
        if nested is None:
            continue
        kind, sub = nested
        if kind == "model":
            _walk(value_node, sub, path + (key,), lines, seen)
        elif isinstance(value_node, yaml.SequenceNode):
            for i, item in enumerate(value_node.value):
                _walk(item, sub, path + (key, i), lines, seen)


def check_keys(node: yaml.Node | None, lines: LineMap) -> None:
    """ConfigError (file:line) for the first key the schema does not know, in file order."""
    if node is not None:
        _walk(node, Config, (), lines, set())
