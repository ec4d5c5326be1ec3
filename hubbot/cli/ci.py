"""``hubbot merge`` and ``hubbot ci``: the commands a job matrix (GitHub Actions) uses.

``hubbot ci matrix`` lists the jobs, ``hubbot ci export`` packs one job's results for the card
job, ``hubbot merge`` joins them; the work is in merge.py.
"""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import config_option, echo_json, json_option, load, only_option, run_safely
from hubbot.workdir import check_output_path


def _split(only: tuple[str, ...]) -> list[str]:
    """Variant names from repeated --only and/or comma/space separated lists (a workflow input)."""
    return [n for item in only for n in item.replace(",", " ").split() if n]


@click.command("merge")
@config_option
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
@run_safely
def merge(config_path: Path, folders: tuple[Path, ...], as_json: bool) -> None:
    """Merge job result folders (from `hubbot ci export`) into the work directory, for the card."""
    from hubbot.hub.release import merge_results

    data = merge_results(load(config_path), list(folders))
    if as_json:
        echo_json(data)
        return
    click.echo(f"merged {len(data['files'])} files and {data['results']} bench results from "
               f"{data['folders']} folders into {data['workdir']}")
    for name in data["files"]:
        click.echo(f"  {name}")


@click.group("ci")
def ci() -> None:
    """Helpers for running a release as a job matrix (one variant per job), e.g. on GitHub Actions."""


@ci.command("matrix")
@config_option
@only_option
@click.option("--github-output", "github_output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also append matrix=, imatrix=, auto=, target=, workdir=, reference=, source_key= lines to this file ($GITHUB_OUTPUT).")
@run_safely
def ci_matrix(config_path: Path, only: tuple[str, ...], github_output: Path | None) -> None:
    """Print the job list as JSON: per variant its file and imatrix use; the bench reference once.

    Reads the config only (no download); `hubbot plan --json` checks the same list against the source.
    """
    import json

    from hubbot.hub.release import job_matrix

    if github_output is not None:
        check_output_path(github_output, "--github-output")
    data = job_matrix(load(config_path), _split(only))
    if github_output is not None:
        with open(github_output, "a", encoding="utf-8") as fh:
            fh.write(f"matrix={json.dumps(data['matrix'], separators=(',', ':'))}\n")
            fh.write(f"imatrix={'true' if data['imatrix'] else 'false'}\n")
            fh.write(f"auto={'true' if data['auto'] else 'false'}\n")
            fh.write(f"target={data['target']}\n")
            fh.write(f"workdir={data['workdir']}\n")
            fh.write(f"reference={data['reference'] or ''}\n")
            fh.write(f"source_key={data['source_key']}\n")
    echo_json(data)


@ci.command("export")
@config_option
@only_option
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write (upload it as this job's artifact).")
@json_option
@run_safely
def ci_export(config_path: Path, only: tuple[str, ...], output: Path, as_json: bool) -> None:
    """Copy these variants' manifest entries and bench results into a folder for `hubbot merge`."""
    from hubbot.hub.release import export_results

    check_output_path(output, "-o/--output", folder=True)
    data = export_results(load(config_path), _split(only), output)
    if as_json:
        echo_json(data)
        return
    click.echo(f"exported {len(data['files'])} files ({len(data['results'])} with bench results) to {data['folder']}")
    if data["missing"]:
        click.echo(f"not built: {', '.join(data['missing'])}", err=True)


ci.add_command(merge)
