"""llama.cpp's log: pieces assembled into lines, sent to one sink per process.

llama.cpp and ggml log through one C callback per process (``llama_log_set``), and a line may
arrive in several pieces. ``route`` installs hubbot's callback and sends each complete line to
a sink: by default the logger (DEBUG level, shown with ``-v``) plus a short buffer of recent
lines from which ``last_error`` explains a failure in one line; in a child process, the pipe
to the parent (``hubbot.llama.child``), which logs them in turn.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable

from hubbot import interrupts

log = logging.getLogger(__name__)

Sink = Callable[[list[str]], None]

# Words that mark the line explaining a failure (llama.cpp's and ggml's own wording).
_ERROR_HINTS = ("error", "failed", "invalid", "exception", "unknown", "missing importance matrix",
                "assert", "abort")

_recent: collections.deque[str] = collections.deque(maxlen=40)


def to_logger(lines: list[str]) -> None:
    """The default sink: DEBUG log records, and the recent-lines buffer."""
    for line in lines:
        text = line.strip()
        if text:
            _recent.append(text)
            log.debug("llama.cpp: %s", text)


class _Router:
    """The process's one log callback. The ctypes object must outlive every llama.cpp call."""

    def __init__(self) -> None:
        self.sink: Sink = to_logger
        self.pending = ""
        self.callback = None

    @interrupts.c_callback  # an interrupt raised in here would be dropped by ctypes
    def on_log(self, _level, text, _user_data) -> None:
        self.pending += text.decode("utf-8", errors="replace")
        if "\n" in self.pending:
            *lines, self.pending = self.pending.split("\n")
            self.sink(lines)


_router = _Router()


def route(sink: Sink | None = None) -> None:
    """Send llama.cpp's log lines to ``sink`` (default ``to_logger``) from now on."""
    import llama_cpp

    _router.sink = sink or to_logger
    if _router.callback is None:
        _router.callback = llama_cpp.llama_log_callback(_router.on_log)
    # Set every time: loading llama_cpp's high-level classes installs their own callback.
    llama_cpp.llama_log_set(_router.callback, None)


def flush() -> None:
    """Send a last line that had no newline yet."""
    if _router.pending:
        line, _router.pending = _router.pending, ""
        _router.sink([line])


def clear_recent() -> None:
    """Forget earlier lines, so ``last_error`` explains only what follows."""
    _recent.clear()


def summarize(lines: Iterable[str]) -> str:
    """The line that best explains a failure: the last one naming an error, else the last line."""
    lines = [ln.strip() for ln in lines if ln.strip()]
    for line in reversed(lines):
        low = line.lower()
        if any(h in low for h in _ERROR_HINTS):
            return line.strip("=").strip()
    return lines[-1] if lines else "no message from llama.cpp"


def last_error() -> str:
    """``summarize`` over the recent lines of this process."""
    return summarize(_recent)
