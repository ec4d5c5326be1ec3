"""The documentation as the tests read it: README.md and docs/*.md, their code, links and headings."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

from support.cli_words import resolve, unknown_options
from support.paths import REPO_ROOT

SHELL_LANGS = ("", "bash", "sh", "console")
# Every fenced block is matched (so a ```yaml block cannot shift the pairing); the language is group 1.
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
_SPAN = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", flags=re.M)
# A repository path as the docs name it: under one of the checkout's own top-level folders.
_REPO_PATH = re.compile(r"^(?:\./)?((?:hubbot|tests|benchmarks|scripts|templates|examples|docs|\.github|\.ci)/[\w./-]*)$")


def doc_pages() -> list[Path]:
    """README.md and every page under docs/."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return _FENCE.findall(text)


def prose(text: str) -> str:
    """``text`` without its fenced blocks (each replaced by as many empty lines)."""
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def code_spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, whitespace (a span may wrap a line) collapsed."""
    return [" ".join(s.split()) for s in _SPAN.findall(prose(text))]


def shell_invocations(text: str) -> list[str]:
    """Every `hubbot ...` command of the shell blocks, comments cut, split at `&&` and pipes."""
    calls = []
    for lang, body in fenced_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        for line in body.splitlines():
            for part in re.split(r"&&|\|", line.split("#")[0]):
                if part.split()[:1] == ["hubbot"]:
                    calls.append(part.strip())
    return calls


def span_invocations(text: str) -> list[str]:
    """Every code span in the prose that is a `hubbot ...` command."""
    return [s for s in code_spans(text) if s.split()[:1] == ["hubbot"]]


def invocation_problem(call: str) -> str | None:
    """What is wrong with a written `hubbot ...` call (unknown command, subcommand or option), or None.

    Usage notation is allowed: `[--only NAME ...]` reads as `--only NAME`.
    """
    words = [w for w in shlex.split(call.replace("[", " ").replace("]", " ")) if w != "..."]
    try:
        cmd, rest = resolve(words[1:])
    except LookupError as exc:
        return f"`{call}`: {exc}"
    bad = unknown_options(cmd, rest)
    return f"`{call}`: {cmd.name} has no option {bad[0]}" if bad else None


def repo_paths(text: str) -> list[str]:
    """Repository paths named in code spans and shell blocks (e.g. `tests/support/hub.py`)."""
    words = [w for s in code_spans(text) for w in s.split()]
    words += [w for lang, body in fenced_blocks(text) if lang in SHELL_LANGS for w in body.split()]
    return [m.group(1) for w in words if (m := _REPO_PATH.match(w))]


def python_name_problems(text: str) -> list[str]:
    """hubbot's Python names in code spans that do not exist: modules run with `-m X` and the
    functions or classes called as `hubbot.x.y(...)`. (Other dotted names may be GGUF keys.)"""
    spans = code_spans(text)
    problems = []
    for name in (m for s in spans for m in re.findall(r"-m\s+(hubbot(?:\.\w+)*)", s)):
        try:
            importlib.import_module(name)
        except ImportError:
            problems.append(f"no module {name}")
    for name in (m for s in spans for m in re.findall(r"\b(hubbot(?:\.\w+)+)\(", s)):
        parts = name.split(".")
        # The longest prefix that imports is the module; the rest are attributes of it.
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        if obj is None:
            problems.append(f"no {name}")
    return problems


def links(text: str) -> list[str]:
    """Targets of the markdown links in the prose (not in code)."""
    return _LINK.findall(_SPAN.sub("", prose(text)))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors the headings of a page define (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, title in _HEADING.findall(prose(text)):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(page: Path) -> list[str]:
    """Relative links of ``page`` whose file or anchor does not exist."""
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{page.name}: link to {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{page.name}: link to {target}: {dest.name} has no heading #{anchor}")
    return problems


def repeated_runs(pages: dict[str, list[str]], run: int = 15, min_filled: int = 10) -> list[str]:
    """Runs of ``run`` lines (at least ``min_filled`` of them not blank) that appear twice, within
    one page or across pages: the mark of a document pasted into itself by a merge."""
    seen: dict[tuple[str, ...], str] = {}
    found = []
    for name, raw in pages.items():
        lines = [line.rstrip() for line in raw]
        i = 0
        while i + run <= len(lines):
            window = tuple(lines[i:i + run])
            if sum(1 for line in window if line.strip()) >= min_filled:
                if window in seen:
                    found.append(f"{name}: lines {i + 1}-{i + run} repeat {seen[window]}")
                    i += run  # report a long repeat once, not once per line
                    continue
                seen[window] = f"{name}: lines {i + 1}-{i + run}"
            i += 1
    return found
