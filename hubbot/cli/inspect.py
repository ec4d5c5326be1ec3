"""``hubbot inspect``: a GGUF file's metadata and tensor types."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import echo_json, json_option, run_safely
from hubbot.workdir import human_bytes


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@json_option
@click.option("--all-metadata", is_flag=True, help="Print every metadata key (long token lists are shortened).")
@run_safely
def inspect(file: Path, as_json: bool, all_metadata: bool) -> None:
    """Show a GGUF file's metadata and tensor-type summary."""
    from hubbot.gguf_io.inspect import inspect_file

    data = inspect_file(file, all_metadata=all_metadata)
    if as_json:
        echo_json(data)
        return
    click.echo(f"{file}: {data['architecture']}, {data['block_count']} blocks, {data['tensor_count']} tensors, "
               f"{data['n_params']:,} weights, {data['bpw']:.2f} bits/weight, {human_bytes(data['size'])}")
    click.echo("tensor types: " + ", ".join(f"{k} {v}" for k, v in data["tensor_types"].items()))
    for key, value in data["metadata"].items():
        click.echo(f"  {key} = {value}")
