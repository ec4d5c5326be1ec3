"""Errors hubbot expects and explains.

Every message is one line that says what went wrong and what to do next. The CLI prints
``error: <message>`` and exits non-zero; anything that is not a ``HubbotError`` is a bug
and keeps its traceback.
"""

from __future__ import annotations


class HubbotError(Exception):
    """An expected failure with a one-line, actionable message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # Keep messages to one line whatever the cause text contains.
        super().__init__(" ".join(str(message).split()))


class ConfigError(HubbotError):
    """variants.yaml is malformed, has unknown keys or impossible recipes."""

    exit_code = 2


class SourceError(HubbotError):
    """The source model is missing, corrupt, inaccessible or of the wrong kind."""


class BuildError(HubbotError):
    """The quantizer refused or failed to build a variant."""


class ImatrixError(HubbotError):
    """An importance matrix is missing, corrupt or does not fit the model."""


class BenchError(HubbotError):
    """A measurement could not be made (model does not load, text too short, ...)."""


class CardError(HubbotError):
    """The model card template failed to render or the result is invalid."""


class HubError(HubbotError):
    """The Hub refused a request (auth, permissions, missing repo, rate limits)."""


class DiskSpaceError(HubbotError):
    """Not enough free disk space for the work about to start."""


class LocalHubError(HubbotError):
    """The local Hub server cannot start (a malformed tokens file, a port already taken)."""
