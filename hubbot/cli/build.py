"""``hubbot build``: quantize the ladder into the work directory."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import config_option, echo_json, json_option, load, only_option, run_safely, threads_option
from hubbot.workdir import human_bytes


@click.command()
@config_option
@only_option
@threads_option
@json_option
@click.option("--force", is_flag=True, help="Rebuild even when the output is up to date.")
@click.option("--require-artifacts", is_flag=True,
              help="Fail in one line instead of computing the importance matrix or recipe: auto's sensitivity "
                   "(a release's build job receives both from the imatrix job).")
@run_safely
def build(config_path: Path, only: tuple[str, ...], threads: int | None, as_json: bool, force: bool,
          require_artifacts: bool) -> None:
    """Build the variants' GGUF files into the work directory."""
    from hubbot.build.run import build as run_build

    results = run_build(load(config_path), only=only, threads=threads, force=force, require_artifacts=require_artifacts)
    if as_json:
        echo_json([{"name": r.name, "file": r.file, "status": r.status, "sha256": r.entry.sha256, "size": r.entry.size,
                    "tensor_types": r.entry.tensor_types} for r in results])
        return
    for r in results:
        click.echo(f"{r.status:9} {r.file}  {human_bytes(r.entry.size or 0)}  {(r.entry.sha256 or '')[:12]}")
