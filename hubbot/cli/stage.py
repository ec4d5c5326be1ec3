"""``hubbot stage``: the source of a release staged once on the Hub (push) and fetched by every later job."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import config_option, echo_json, json_option, load, run_safely, threads_option
from hubbot.workdir import check_output_path, human_bytes


@click.group("stage")
def stage() -> None:
    """Stage a release's float source on the target repo once, and fetch it in later jobs."""


@stage.command("push")
@config_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write staged.json here (repo, pinned commit, files with sha256); hand it to later jobs.")
@threads_option
@json_option
@run_safely
def stage_push_command(config_path: Path, output: Path, threads: int | None, as_json: bool) -> None:
    """Resolve the source, build the ladder's float variant and push it first (no card), pinned by commit."""
    from hubbot.stage import stage_push

    check_output_path(output, "-o/--output")
    data = stage_push(load(config_path), output, threads=threads)
    if as_json:
        echo_json(data)
        return
    where = f"{data['repo']}@{data['revision'][:12]}" + (f" (branch {data['branch']})" if data["branch"] else "")
    for f in data["files"]:
        click.echo(f"staged {f['name']} ({human_bytes(f['size'])}, sha256 {f['sha256'][:12]}) at {where}")
    click.echo(f"wrote {output}")


@stage.command("fetch")
@config_option
@click.option("--staged", "staged_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The staged.json the convert job wrote.")
@click.option("--job", default="this job", show_default=True, help="The job's name, for error messages (e.g. build:q4_k).")
@json_option
@run_safely
def stage_fetch_command(config_path: Path, staged_path: Path, job: str, as_json: bool) -> None:
    """Download the staged files at their pinned commit (resumable), check their sha256 and use them as the source."""
    from hubbot.stage import stage_fetch

    data = stage_fetch(load(config_path), staged_path, job)
    if as_json:
        echo_json(data)
        return
    click.echo(f"fetched {Path(data['file']).name} from {data['repo']}@{data['revision'][:12]}, sha256 verified")
