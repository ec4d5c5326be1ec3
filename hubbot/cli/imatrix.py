"""``hubbot imatrix``: compute (or load) the importance matrix and publish it into out/."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import (
    config_option,
    echo_json,
    gpu_layers_option,
    json_option,
    load,
    run_safely,
    threads_option,
    with_gpu_layers,
)
from hubbot.workdir import check_output_path, human_bytes


@click.command("imatrix")
@config_option
@click.option("--chunks", type=click.IntRange(min=1), default=None, help="Chunks of calibration text to use (default: imatrix.chunks, else all).")
@click.option("--ctx", type=click.IntRange(min=32), default=None, help="Tokens per chunk (default: imatrix.ctx).")
@threads_option
@click.option("--force", is_flag=True, help="Recompute even when a cached matrix matches.")
@gpu_layers_option
@json_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the matrix here (GGUF; legacy format when the name ends in .dat).")
@run_safely
def imatrix(config_path: Path, chunks: int | None, ctx: int | None, threads: int | None, force: bool,
            gpu_layers: int | None, as_json: bool, output: Path | None) -> None:
    """Compute the importance matrix from imatrix.calibration (cached by content) or check imatrix.file."""
    from hubbot.build.run import default_threads, prepare
    from hubbot.errors import ConfigError
    from hubbot.imatrix.ensure import describe, ensure_imatrix
    from hubbot.imatrix.io import read_imatrix, write_imatrix

    if output is not None:
        check_output_path(output, "-o/--output")  # before minutes of computing, not after
    cfg = with_gpu_layers(load(config_path), "imatrix", gpu_layers)
    if not cfg.has_imatrix_source:
        raise ConfigError(f"{cfg.path}: no imatrix section; add imatrix.calibration (a text file) or imatrix.file")
    work, source, _ = prepare(cfg, None)
    ref = ensure_imatrix(cfg, source, work, threads=default_threads(cfg, threads), compute=True,
                         ctx=ctx, chunks=chunks, force=force)
    assert ref is not None
    if output is not None:
        write_imatrix(read_imatrix(ref.path), output)
    data = describe(ref, work)
    if output is not None:
        data["written"] = str(output)
    if as_json:
        echo_json(data)
        return
    click.echo(f"{ref.path}  {data.get('entries')} matrices, {data.get('chunks')} chunks x {data.get('ctx')} tokens "
               f"of {data.get('calibration')}, {human_bytes(data.get('size', 0))}, sha256 {ref.sha256[:12]}")
    if output is not None:
        click.echo(f"written {output}")
