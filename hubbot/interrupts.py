"""SIGINT and SIGTERM: one way to stop.

A CI runner cancels a job with SIGINT, then SIGTERM a few seconds later, then SIGKILL. Python
turns only SIGINT into an exception by default; SIGTERM would end hubbot on the spot, leaving
the quantizer's child running and its partial file behind. While ``handled()`` is active both
signals raise ``Interrupted`` (a ``KeyboardInterrupt``) in the main thread, so the same
``finally`` blocks run for either: the child-process runner kills its child, partial files are
removed, and the CLI prints one line and exits with 128 + the signal number (130 for SIGINT,
143 for SIGTERM: the shell's convention, so a CI log tells a user's Ctrl-C from a cancel).

Python runs a signal handler in whatever Python code the main thread runs next, and an
exception raised inside a ctypes callback (llama.cpp's log callback, called from C during a
model load) is printed and dropped by ctypes. So such callbacks are marked with
``c_callback``: a signal that arrives while one runs is only noted, and raised by the next
``check()``, which the llama.cpp session layer calls whenever a C call returns.

Only the first signal interrupts. Later ones (SIGTERM after SIGINT is exactly what a runner
sends) are ignored so they cannot cut that clean-up short; SIGKILL still ends everything.
``deferred()`` holds the first signal back over a few lines that must not be split, such as
starting a child process and learning its pid.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by ``signum``; unwinding cleans up, then the CLI exits 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    received: int | None = None  # the first signal of this run
    deferring = 0  # depth of deferred() blocks
    pending = False  # a signal arrived inside deferred() and is still to be raised


_state = _State()
_c_callbacks: set = set()  # code objects of Python functions that C calls back


def _on_signal(signum: int, frame) -> None:
    if _state.received is not None:
        return  # already unwinding: let the clean-up finish
    _state.received = signum
    if _state.deferring or _in_c_callback(frame):
        _state.pending = True
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise ``Interrupted``; the previous handlers come back after
    (unless a signal arrived: then repeats stay ignored while the process exits).

    Only the main thread can own signal handlers; elsewhere (a command run from a worker
    thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    _state.received, _state.deferring, _state.pending = None, 0, False
    for s in _SIGNALS:
        signal.signal(s, _on_signal)
    try:
        yield
        check()  # a signal noted in a callback but never raised still ends the run as interrupted
    finally:
        for s, handler in previous.items():
            # After a signal the process is on its way out: ignore repeats until it has exited.
            # (SIG_IGN, not our handler: Python resets its own handlers to the default, which
            # kills, while it finalizes.)
            signal.signal(s, handler if _state.received is None else signal.SIG_IGN)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a first signal back until the block ends, then raise it (unless already raising)."""
    _state.deferring += 1
    raised = False
    try:
        yield
    except BaseException:
        raised = True
        raise
    finally:
        _state.deferring -= 1
        if not _state.deferring and _state.pending:
            _state.pending = False
            if not raised:
                raise Interrupted(_state.received or signal.SIGINT)


@contextlib.contextmanager
def stopped_on_error(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Yield ``proc``; if the block raises (an interrupt included), kill and reap it first."""
    try:
        yield proc
    except BaseException:
        with deferred():
            proc.kill()
            proc.wait()
        raise


def c_callback(fn):
    """Mark ``fn`` as called from C: a signal that arrives while it runs is raised by ``check()``."""
    _c_callbacks.add(fn.__code__)
    return fn


def _in_c_callback(frame) -> bool:
    while frame is not None:
        if frame.f_code in _c_callbacks:
            return True
        frame = frame.f_back
    return False


def check() -> None:
    """Raise a signal noted in a C callback (call this right after C calls that call back)."""
    if _state.pending and not _state.deferring:
        _state.pending = False
        raise Interrupted(_state.received or signal.SIGINT)


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal number: 130 for SIGINT (and a plain KeyboardInterrupt), 143 for SIGTERM."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def message(exc: KeyboardInterrupt) -> str:
    """The one line printed when a signal stopped the run."""
    if getattr(exc, "signum", signal.SIGINT) == signal.SIGTERM:
        return "terminated (SIGTERM); rerun the same command to resume"
    return "interrupted; rerun the same command to resume"
