"""The documentation stays true: README.md and docs/*.md name real commands, options and files,
link only to what exists, and no page repeats another (the mark of a broken merge)."""

from __future__ import annotations

import pytest
from support.docpages import (
    code_spans,
    doc_pages,
    invocation_problem,
    link_problems,
    links,
    python_name_problems,
    repeated_runs,
    repo_paths,
    shell_invocations,
    slug,
    span_invocations,
)
from support.paths import REPO_ROOT

PAGES = doc_pages()
DOCS = [p for p in PAGES if p.parent == REPO_ROOT / "docs"]


def page_id(page):
    return str(page.relative_to(REPO_ROOT))


@pytest.mark.parametrize("page", DOCS, ids=page_id)
def test_docs_shell_blocks_name_real_commands_and_options(page):
    # README.md's shell blocks are checked in test_cli.py, with its set-up commands.
    problems = [p for p in map(invocation_problem, shell_invocations(page.read_text())) if p]
    assert not problems, f"{page_id(page)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_commands_in_prose_are_real(page):
    problems = [p for p in map(invocation_problem, span_invocations(page.read_text())) if p]
    assert not problems, f"{page_id(page)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_and_anchors_exist(page):
    assert not link_problems(page)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_repository_paths_named_exist(page):
    missing = [p for p in repo_paths(page.read_text()) if not (REPO_ROOT / p).exists()]
    assert not missing, f"{page_id(page)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_names_exist(page):
    assert not python_name_problems(page.read_text()), page_id(page)


def test_no_run_of_lines_repeats_within_or_across_pages():
    pages = {page_id(p): p.read_text(encoding="utf-8").splitlines() for p in PAGES}
    assert not repeated_runs(pages)


def test_the_index_links_every_page():
    index = REPO_ROOT / "docs" / "README.md"
    linked = {target.partition("#")[0] for target in links(index.read_text())}
    assert {p.name for p in DOCS if p != index} <= linked


def test_readme_stays_short_and_points_into_docs():
    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "docs/README.md" in links(text)


# --- the checks themselves fail on bad input -----------------------------------------------------

def test_invocation_check_finds_unknown_commands_and_options():
    assert invocation_problem("hubbot plan -c variants.yaml [--only NAME ...] [--json]") is None
    assert invocation_problem("hubbot ci matrix --github-output FILE") is None
    assert invocation_problem("hubbot -q") is None
    assert "export-results" in invocation_problem("hubbot export-results -c variants.yaml")
    assert "'nope'" in invocation_problem("hubbot ci nope")
    assert "--no-such" in invocation_problem("hubbot publish --dry-run --no-such")


def test_spans_and_paths_are_read_outside_code_blocks_too(tmp_path):
    text = ("Run `hubbot plan --json`, see `tests/support/hub.py`.\n\n"
            "```bash\nhubbot build --force  # `hubbot nothing`\n./scripts/setup.sh\n```\n"
            "```yaml\nkey: `hubbot not-a-span`\n```\n")
    assert span_invocations(text) == ["hubbot plan --json"]
    assert shell_invocations(text) == ["hubbot build --force"]
    assert repo_paths(text) == ["tests/support/hub.py", "scripts/setup.sh"]
    assert "hubbot not-a-span" not in code_spans(text)


def test_python_name_check_finds_moved_modules():
    text = ("`python3 -m hubbot.llama.selfcheck`, `hubbot.card.render.render_card(cfg)`, "
            "`python3 -m hubbot.selfcheck`, `hubbot.card.render_card(cfg)`, `hubbot.source.revision`")
    assert python_name_problems(text) == ["no module hubbot.selfcheck", "no hubbot.card.render_card"]


def test_link_check_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "b.md").write_text("# Title\n\n## Two words, and `code`\n\n```sh\n# not a heading\n```\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#two-words-and-code) [web](https://example.org/x) [self](#top)\n"
                    "[gone](missing.md) [bad anchor](b.md#not-a-heading) `[in code](nowhere.md)`\n\n# Top\n")
    problems = link_problems(page)
    assert len(problems) == 2, problems
    assert "missing.md: no such file" in problems[0] and "no heading #not-a-heading" in problems[1]
    assert slug("GitHub Actions: `ci.yml`") == "github-actions-ciyml"


def test_repeat_check_finds_a_pasted_block():
    block = [f"line {i} of a section" for i in range(16)]
    assert repeated_runs({"a.md": ["intro", *block, "x"], "b.md": ["other"]}) == []
    found = repeated_runs({"a.md": ["intro", *block], "b.md": ["other", *block]})
    assert found == ["b.md: lines 2-16 repeat a.md: lines 2-16"]
    assert repeated_runs({"a.md": [*block, *block]})  # within one page as well
    # Mostly blank runs (tables of short rows, code fences) are not counted.
    sparse = ["x", "", "", "", "", "", ""] * 5
    assert repeated_runs({"a.md": sparse}) == []
