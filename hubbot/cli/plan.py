"""``hubbot plan``: each variant's file, tensor types, size and state, before anything is built."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import config_option, echo_json, json_option, load, only_option, run_safely, threads_option


@click.command()
@config_option
@only_option
@threads_option
@json_option
@click.option("--no-dry-run", is_flag=True, help="Skip llama.cpp's dry run (no tensor types or sizes).")
@click.option("--measure", is_flag=True,
              help="Compute the importance matrix and the sensitivity recipe: auto needs, when not cached.")
@run_safely
def plan(config_path: Path, only: tuple[str, ...], threads: int | None, as_json: bool, no_dry_run: bool,
         measure: bool) -> None:
    """Show each variant's file, tensor types, size and whether it is up to date."""
    from hubbot.build.plan import plan_project, render_plan

    data = plan_project(load(config_path), only=only, threads=threads, dry_run=not no_dry_run, measure=measure)
    if as_json:
        echo_json(data)
    else:
        click.echo(render_plan(data))
