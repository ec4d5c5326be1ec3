"""YAML loading that remembers where each value came from.

PyYAML's plain loaders drop line numbers and silently keep the last of two duplicate keys;
hubbot needs both to say "variants.yaml:14: ...". ``load_with_lines`` walks the composed
node tree itself and returns the data plus a map from key path to 1-based line.

Anchors and aliases are allowed, but every alias is expanded into a copy: a few lines of nested
aliases (an "alias bomb") would expand into billions of values and hang the loader, so the number
of values built is capped at ``MAX_VALUES``, far above any real ladder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hubbot.errors import ConfigError

KeyPath = tuple  # a key path such as ("variants", 3, "type")

# A 16-variant ladder with layer rules holds a few hundred values; 50,000 leaves room for big
# card.extra blocks while an alias bomb is stopped in well under a second.
MAX_VALUES = 50_000


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


class _Budget:
    """Counts the values built so far; ConfigError once there are more than ``MAX_VALUES``."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.left = MAX_VALUES

    def spend(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise ConfigError(
                f"{self.filename}:{node.start_mark.line + 1}: the file expands to more than {MAX_VALUES:,} values "
                "(nested anchors and aliases?); write the values out instead of repeating aliases"
            )


def _construct(node: yaml.Node, path: KeyPath, lines: LineMap, budget: _Budget) -> Any:
    budget.spend(node)
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
            out[key] = _construct(value_node, path + (key,), lines, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), lines, budget) for i, item in enumerate(node.value)]
    # Scalars: let the safe constructor resolve ints, floats, bools and nulls.
    value = _SCALARS.construct_object(node, deep=True)
    _SCALARS.constructed_objects.clear()  # the loader remembers every node it built: forget them
    return value


# A loader over empty input, used only to construct scalar nodes (ints, floats, bools, nulls).
_SCALARS = yaml.SafeLoader("")


def compose(path: Path) -> tuple[yaml.Node | None, LineMap]:
    """The YAML node tree of ``path`` (aliases not expanded yet); ConfigError (one line, with file:line)
    if it cannot be read or is malformed."""
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
    return node, lines


def construct(node: yaml.Node | None, lines: LineMap) -> Any:
    """The data of a composed tree (aliases expanded, at most ``MAX_VALUES`` values), recording lines."""
    if node is None:
        return {}
    return _construct(node, (), lines, _Budget(lines.filename))


def load_with_lines(path: Path) -> tuple[Any, LineMap]:
    """Parse ``path`` as YAML; ConfigError (one line, with file:line) if it is malformed."""
    node, lines = compose(path)
    return construct(node, lines), lines
