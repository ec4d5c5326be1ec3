"""YAML loading that remembers where each value came from.

PyYAML's plain loaders drop line numbers and silently keep the last of two duplicate keys;
hubbot needs both to say "variants.yaml:14: ...". ``load_with_lines`` walks the composed
node tree itself and returns the data plus a map from key path to 1-based line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hubbot.errors import ConfigError

KeyPath = tuple  # a key path such as ("variants", 3, "type")


class LineMap:
    """Key path -> line number, with lookup of the nearest known ancestor."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[KeyPath, int] = {}

    def line_of(self, path: KeyPath) -> int | None:
        path = tuple(path)
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def where(self, path: KeyPath) -> str:
        line = self.line_of(path)
        return f"{self.filename}:{line}" if line else self.filename


def _construct(node: yaml.Node, path: KeyPath, lines: LineMap) -> Any:
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{lines.filename}:{key_node.start_mark.line + 1}: keys must be plain strings")
            key = key_node.value
            if key in out:
                raise ConfigError(
                    f"{lines.filename}:{key_node.start_mark.line + 1}: duplicate key {key!r}; "
                    "remove one of them"
                )
            lines.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), lines) for i, item in enumerate(node.value)]
    # Scalars: let the safe constructor resolve ints, floats, bools and nulls.
    return _scalar_loader().construct_object(node, deep=True)


def _scalar_loader() -> yaml.SafeLoader:
    # A loader over empty input, used only for its tag resolution of scalar nodes.
    return yaml.SafeLoader("")


def load_with_lines(path: Path) -> tuple[Any, LineMap]:
    """Parse ``path`` as YAML; ConfigError (one line, with file:line) if it is malformed."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: file not found; pass the path of your variants.yaml with --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read ({exc}); check the file") from None
    lines = LineMap(name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: malformed YAML: {problem}; fix the syntax at that line") from None
    if node is None:
        return {}, lines
    return _construct(node, (), lines), lines
