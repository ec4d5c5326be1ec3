"""The layout a newcomer reads: stages as subpackages, imports flowing one way, small modules.

Read from the source with ``ast`` (every import counts, also those inside functions), so a cycle
hidden in a function body fails here just as a top-level one does.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import tomllib
from support.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "hubbot"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """hubbot modules that ``path`` imports (a ``from pkg import name`` of a submodule counts as that submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "hubbot"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("hubbot"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found |= subs or {node.module}
    return {m for m in found if m in known and m != module_name(path)}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # Importing hubbot.a.b runs hubbot.a's __init__ too, but that is the package's own business:
    # an edge goes to the module named, and packages are nodes like any module.
    return {name: imports_of(path, known) for name, path in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycles():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_modules_never_import_click():
    for name, path in modules().items():
        if name.startswith("hubbot.cli"):
            continue
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in names if m.split(".")[0] == "click"}, f"{name} imports click"


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports_and_stays_small(name):
    importlib.import_module(name)
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by purpose"


def test_stages_are_subpackages():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert top == ["bench", "budget", "build", "card", "cli", "config", "gguf_io", "hub", "imatrix", "llama", "source", "testing"]


def test_pyproject_lists_every_package():
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    listed = set(data["tool"]["setuptools"]["packages"])
    found = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert found | {"hubbot.card.templates"} == listed
