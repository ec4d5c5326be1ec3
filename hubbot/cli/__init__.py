"""The ``hubbot`` command line: the group, its global options, and the commands registered on it.

Each command lives in its own module and only parses options and prints; the work happens in
the stage packages (``hubbot.build``, ``hubbot.bench``, ...), which never import click.
"""

from __future__ import annotations

import logging
import sys

import click

from hubbot import __version__
from hubbot.cli import bench, build, card, ci, imatrix, inspect, plan, publish, stage
from hubbot.hub.token import install_redaction
from hubbot.progress import set_quiet


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
    # Whatever hubbot or a library logs or a traceback shows, the Hub token is not in it.
    install_redaction()


# The order of `hubbot --help`'s command list is click's (alphabetical); this is the pipeline's.
for command in (plan.plan, build.build, inspect.inspect, imatrix.imatrix, bench.bench, card.card,
                publish.publish, publish.serve_hub, stage.stage, ci.merge, ci.ci):
    main.add_command(command)
