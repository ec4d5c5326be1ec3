"""The ``hubbot`` command line. Parsing and printing only: the work happens in core modules.

Expected failures (``HubbotError``) become ``error: <one line>`` on stderr and a non-zero
exit; set ``HUBBOT_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .config import Config, load_config
from .errors import HubbotError
from .progress import set_quiet
from .workdir import human_bytes

log = logging.getLogger("hubbot")


def run_safely(fn):
    """Turn HubbotError into a one-line message and exit code; keep tracebacks for bugs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HubbotError as exc:
            if os.environ.get("HUBBOT_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted; rerun the same command to resume", err=True)
            sys.exit(130)
        except OSError as exc:
            if os.environ.get("HUBBOT_DEBUG"):
                raise
            # A full disk or a vanished folder is the user's to fix, not a bug.
            click.echo(f"error: {exc.strerror or exc} ({exc.filename or 'file system'}); check the path and free space", err=True)
            sys.exit(1)

    return wrapper


def config_option(fn):
    return click.option(
        "-c", "--config", "config_path", default="variants.yaml", show_default=True,
        type=click.Path(dir_okay=False, path_type=Path), help="The variants.yaml to use.",
    )(fn)


def only_option(fn):
    return click.option("--only", multiple=True, metavar="NAME", help="Only these variants (repeatable).")(fn)


def threads_option(fn):
    return click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")(fn)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(fn)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def load(config_path: Path) -> Config:
    return load_config(config_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubbot")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or log messages.")
@click.option("-v", "--verbose", is_flag=True, help="Log details, including llama.cpp's.")
def main(quiet: bool, verbose: bool) -> None:
    """Publish GGUF builds of a language model to a Hugging Face Hub repo."""
    set_quiet(quiet)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    # Libraries' own chatter (gguf's writer summary, httpx requests) only with --verbose.
    for noisy in ("gguf", "httpx", "httpx2", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.command()
@config_option
@only_option
@threads_option
@json_option
@click.option("--no-dry-run", is_flag=True, help="Skip llama.cpp's dry run (no tensor types or sizes).")
@run_safely
def plan(config_path: Path, only: tuple[str, ...], threads: int | None, as_json: bool, no_dry_run: bool) -> None:
    """Show each variant's file, tensor types, size and whether it is up to date."""
    from .planview import plan_project, render_plan

    data = plan_project(load(config_path), only=only, threads=threads, dry_run=not no_dry_run)
    if as_json:
        echo_json(data)
    else:
        click.echo(render_plan(data))


@main.command()
@config_option
@only_option
@threads_option
@json_option
@click.option("--force", is_flag=True, help="Rebuild even when the output is up to date.")
@run_safely
def build(config_path: Path, only: tuple[str, ...], threads: int | None, as_json: bool, force: bool) -> None:
    """Build the variants' GGUF files into the work directory."""
    from .build import build as run_build

    results = run_build(load(config_path), only=only, threads=threads, force=force)
    if as_json:
        echo_json([{"name": r.name, "file": r.file, "status": r.status, **{k: r.entry.get(k) for k in ("sha256", "size", "tensor_types")}} for r in results])
        return
    for r in results:
        click.echo(f"{r.status:9} {r.file}  {human_bytes(r.entry.get('size', 0))}  {r.entry.get('sha256', '')[:12]}")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@json_option
@click.option("--all-metadata", is_flag=True, help="Print every metadata key (long token lists are shortened).")
@run_safely
def inspect(file: Path, as_json: bool, all_metadata: bool) -> None:
    """Show a GGUF file's metadata and tensor-type summary."""
    from .planview import inspect_file

    data = inspect_file(file, all_metadata=all_metadata)
    if as_json:
        echo_json(data)
        return
    click.echo(f"{file}: {data['architecture']}, {data['block_count']} blocks, {data['tensor_count']} tensors, "
               f"{data['n_params']:,} weights, {data['bpw']:.2f} bits/weight, {human_bytes(data['size'])}")
    click.echo("tensor types: " + ", ".join(f"{k} {v}" for k, v in data["tensor_types"].items()))
    for key, value in data["metadata"].items():
        click.echo(f"  {key} = {value}")


# Commands that live in their own CLI modules register here (one import + add_command each).
# --- command registry ---
from .cli_imatrix import imatrix  # noqa: E402

main.add_command(imatrix)
from .cli_bench import bench  # noqa: E402

main.add_command(bench)
from .cli_card import card  # noqa: E402

main.add_command(card)
from .cli_publish import publish, serve_hub  # noqa: E402

main.add_command(publish)
main.add_command(serve_hub)
from .cli_merge import ci, merge  # noqa: E402

main.add_command(merge)
main.add_command(ci)
# --- end of command registry ---

