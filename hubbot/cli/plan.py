"""``hubbot plan``: each variant's file, tensor types, size and state, before anything is built;
the release's jobs and what each needs; and ``--check-job``, the guard a release job runs first."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import config_option, echo_json, json_option, load, only_option, run_safely, threads_option


@click.command()
@config_option
@only_option
@threads_option
@json_option
@click.option("--no-dry-run", is_flag=True, help="Skip llama.cpp's dry run (no tensor types, sizes or job needs).")
@click.option("--measure", is_flag=True,
              help="Compute the importance matrix and the sensitivity recipe: auto needs, when not cached.")
@click.option("--check-job", "check_job", metavar="JOB", default=None,
              help="Only check that this machine can run release job JOB (convert, imatrix, build with "
                   "--only VARIANT, card): exit 3 with what it needs when it cannot. Downloads nothing.")
@click.option("--plan-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --check-job: the JSON of an earlier `hubbot plan --json` to take the job's needs from.")
@run_safely
def plan(config_path: Path, only: tuple[str, ...], threads: int | None, as_json: bool, no_dry_run: bool,
         measure: bool, check_job: str | None, plan_file: Path | None) -> None:
    """Show each variant's file, tensor types, size and whether it is up to date, and per release
    job its disk, memory, time and runner class."""
    from hubbot.build.plan import check_release_job, plan_project, render_plan
    from hubbot.workdir import human_bytes

    cfg = load(config_path)
    if check_job is not None:
        data = check_release_job(cfg, check_job, only, plan_file, threads)
        if as_json:
            echo_json(data)
        else:
            free = ", ".join(f"{human_bytes(d['free'])} free under {' and '.join(d['folders'])}" for d in data["disk"])
            click.echo(f"ok: job {data['job']} needs {human_bytes(data['need_disk'])} of disk and "
                       f"{human_bytes(data['need_memory'])} of memory; this machine has {free} and "
                       f"{human_bytes(data['memory']['available'])} of memory available")
        return
    if plan_file is not None:
        raise click.UsageError("--plan-file goes with --check-job")
    data = plan_project(cfg, only=only, threads=threads, dry_run=not no_dry_run, measure=measure)
    if as_json:
        echo_json(data)
    else:
        click.echo(render_plan(data))
