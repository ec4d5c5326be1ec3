"""Reading a `hubbot ...` command line written down elsewhere (docs, workflows) against the real CLI."""

from __future__ import annotations

import click

from hubbot.cli import main


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a word list (after `hubbot`) names, and the words after its name.

    Raises LookupError naming the unknown command or subcommand.
    """
    cmd: click.Command = main
    rest = list(words)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        if rest[0] not in cmd.commands:
            raise LookupError(f"hubbot has no command {rest[0]!r} (known: {sorted(cmd.commands)})")
        cmd = cmd.commands[rest.pop(0)]
    return cmd, rest


def options_of(cmd: click.Command) -> set[str]:
    """Every spelling of every option ``cmd`` takes (--flag, -f, --no-flag)."""
    return {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}


def unknown_options(cmd: click.Command, rest: list[str]) -> list[str]:
    """The words of ``rest`` that look like options ``cmd`` does not take (``--x=1`` counts as ``--x``)."""
    known = options_of(cmd)
    return [w for w in rest if w.startswith("-") and w != "-" and w.split("=")[0] not in known]
