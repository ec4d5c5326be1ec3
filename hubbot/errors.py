"""Errors hubbot expects and explains.

Every message is one line that says what went wrong and what to do next. The CLI prints
``error: <message>`` and exits non-zero; anything that is not a ``HubbotError`` is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


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


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) when it is not a folder: a file
    where a folder has to be for ``path`` to be created; None when the way is clear."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system failure the user can fix, naming the path and what to do."""
    name = exc.filename or exc.filename2
    path = Path(os.fsdecode(name)) if name is not None else None
    code = exc.errno
    if path is not None and code in (errno.ENOTDIR, errno.EEXIST):
        blocker = file_in_the_way(path if code == errno.EEXIST else path.parent)
        if blocker == path:
            return f"{path} is a file where a folder is needed; choose another path, or move that file away"
        if blocker is not None:
            return (f"{path}: {blocker} is a file, so nothing can be created inside it; "
                    "choose a path in a folder, or move that file away")
    if path is not None and code == errno.EISDIR:
        return f"{path} is a folder, not a file; give the path of a file"
    if path is not None and code == errno.ENOENT:
        return f"{path} does not exist; check the path"
    if code == errno.EPIPE:
        return "the output was closed before hubbot finished writing it (broken pipe)"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied for {path or 'a file'}; check its permissions or choose another path"
    if code == errno.EROFS:
        return f"{path or 'the target'} is on a read-only file system; choose a writable path"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the disk holding {path or 'the work directory'}; free some space or set "
                "build.workdir to another disk")
    # Anything else (an I/O error, a vanished folder) is still the user's to fix, not a bug.
    return f"{exc.strerror or exc} ({path or 'file system'}); check the path and free space"
