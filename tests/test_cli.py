"""The command line: every command documents itself, and the README only names real commands."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner
from support.docpages import invocation_problem, shell_invocations
from support.paths import REPO_ROOT

from hubbot.cli import main


def all_commands():
    return sorted(main.commands.items())


@pytest.mark.parametrize(("name", "command"), all_commands())
def test_every_command_has_help(name, command):
    assert command.help and len(command.help.strip()) > 10, name
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert "Usage: main " + name in result.output or f"Usage: hubbot {name}" in result.output
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden and param.name not in ("help",):
            assert param.help, f"{name} {param.opts} has no help text"


def test_readme_names_only_real_commands_and_options():
    calls = shell_invocations((REPO_ROOT / "README.md").read_text())
    assert calls, "the README shows no hubbot command"
    problems = [p for p in map(invocation_problem, calls) if p]
    assert not problems, "README.md: " + "; ".join(problems)


def test_readme_starts_with_the_two_setup_commands():
    text = (REPO_ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [ln for ln in first_block.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(commands) == 2
    assert "hubbot publish" in commands[0] and "examples/gemma-3-270m/variants.yaml" in commands[0]
    assert "pytest" in commands[1]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    setup, _, test = commands[1].partition("&&")
    assert setup.strip().lstrip("./") in ci and test.strip().replace("python ", "python3 ") in ci


def test_version_and_unknown_command():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.startswith("hubbot, version ")
    result = runner.invoke(main, ["frobnicate"])
    assert result.exit_code == 2


def test_inspect_shows_metadata_and_tensor_types(tiny_gguf, tmp_path):
    import json

    from hubbot.llama.quantize import QuantizeSpec, quantize

    out = tmp_path / "tiny-q4_0.gguf"
    quantize(tiny_gguf, out, QuantizeSpec("Q4_0", metadata=(("general.quantized_by", "inspector"),)))
    runner = CliRunner()
    result = runner.invoke(main, ["inspect", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["architecture"] == "llama" and data["block_count"] == 4
    assert data["tensor_types"]["Q4_0"] > 0 and data["metadata"]["general.quantized_by"] == "inspector"
    assert "tokenizer.ggml.tokens" not in data["metadata"]
    text = runner.invoke(main, ["inspect", str(out)]).output
    assert "llama, 4 blocks" in text and "Q4_0" in text
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    result = runner.invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 1 and result.output.startswith("error: ") and result.output.count("\n") == 1
