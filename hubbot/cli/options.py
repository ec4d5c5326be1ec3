"""What every command shares: the error wrapper, the common options and JSON output.

Expected failures (``HubbotError``) become ``error: <one line>`` on stderr and a non-zero
exit; set ``HUBBOT_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from hubbot import interrupts
from hubbot.config import Config, load_config
from hubbot.errors import HubbotError, describe_os_error
from hubbot.hub.token import redact


def run_safely(fn):
    """Turn HubbotError into a one-line message and exit code; keep tracebacks for bugs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with interrupts.handled():  # SIGTERM (a CI cancel) unwinds like Ctrl-C
                return fn(*args, **kwargs)
        except HubbotError as exc:
            if os.environ.get("HUBBOT_DEBUG"):
                raise
            click.echo(redact(f"error: {exc}"), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            click.echo(f"error: {interrupts.message(exc)}", err=True)
            sys.exit(interrupts.exit_code(exc))
        except OSError as exc:
            if os.environ.get("HUBBOT_DEBUG"):
                raise
            # A full disk, a file where a folder should be: the user's to fix, not a bug.
            click.echo(redact(f"error: {describe_os_error(exc)}"), err=True)
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


def gpu_layers_option(fn):
    return click.option(
        "--gpu-layers", type=click.IntRange(min=-1), default=None, metavar="N",
        help="Layers to offload to the GPU (-1: all; default: the config's gpu_layers, normally 0). "
             "Needs a GPU build of llama-cpp-python; a no-op on a CPU build.")(fn)


def with_gpu_layers(cfg: Config, section: str, gpu_layers: int | None) -> Config:
    """``cfg`` with ``<section>.gpu_layers`` replaced when --gpu-layers was given."""
    if gpu_layers is None:
        return cfg
    part = getattr(cfg, section).model_copy(update={"gpu_layers": gpu_layers})
    out = cfg.model_copy(update={section: part})
    out._path = cfg.path
    return out


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(fn)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def load(config_path: Path) -> Config:
    return load_config(config_path)
