"""Running llama.cpp work in a child process: the quantizer and the imatrix collection.

Why a child: ``GGML_ASSERT`` calls ``abort()``, which would take hubbot down with it; in a
child the abort becomes a one-line error carrying llama.cpp's own last lines, and whatever the
work loaded (a model, its buffers) is gone from memory when it returns.

How the child starts is the caller's choice, and both choices avoid one trap: ggml's CPU
backend runs on GNU OpenMP, and a plain ``fork`` of a process that has already run its
threads (a benchmark, an earlier collection) deadlocks as soon as the child enters an
``omp parallel`` region (the quantizer initialises its IQ grids that way).

- ``"forkserver"`` (the quantizer): a clean server process, started once, imports llama_cpp
  (see ``preload``); each job is a cheap fork of that server, which never runs ggml itself.
- ``"spawn"`` (the imatrix collection): a fresh interpreter per job. The collection runs for
  minutes, so the second it takes to start does not matter.

The protocol: the parent calls ``run(work, args, ...)``; in the child, ``work(send, *args)``
runs with llama.cpp's log routed to the parent as ``("log", lines)`` messages, may ``send(kind,
payload)`` messages of its own (progress), and returns a picklable result. A ``HubbotError`` in
the child becomes the caller's error class with the same message; an abort, a crash or an
interrupt always ends with the child reaped (killed first when it is still running).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import logging
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hubbot import interrupts
from hubbot.errors import HubbotError
from hubbot.llama import logs

log = logging.getLogger(__name__)

Send = Callable[[str, Any], None]
_TAIL = 200  # log lines kept for the error message of a failed child
_PR_SET_PDEATHSIG = 1


@functools.lru_cache(maxsize=None)
def _context(method: str, preload: tuple[str, ...]):
    ctx = mp.get_context(method)
    if method == "forkserver" and preload:
        # The server imports these once; each job is then a cheap fork of it.
        ctx.set_forkserver_preload(list(preload))
    return ctx


def _die_with_parent() -> None:
    """Linux: the kernel kills this child when its parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_main(conn, err_path: str, work: Callable[..., Any], args: Sequence[Any]) -> None:
    _die_with_parent()
    # The parent owns the interrupt: it kills this process when it is stopped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # llama.cpp and ggml print asserts straight to fd 2: keep them for the parent's message.
    # ggml_abort would also run gdb for a backtrace (on fd 1): not wanted here.
    fd = os.open(err_path, os.O_WRONLY | os.O_TRUNC)
    os.dup2(fd, 2)
    os.dup2(fd, 1)
    os.environ["GGML_NO_BACKTRACE"] = "1"

    def send(kind: str, payload: Any) -> None:
        conn.send((kind, payload))

    try:
        logs.route(lambda lines: send("log", lines))
        result = work(send, *args)
        logs.flush()
        send("result", result)
    except HubbotError as exc:
        logs.flush()
        send("error", str(exc))
    except BaseException:  # noqa: BLE001  (report any failure to the parent, then exit)
        send("crash", traceback.format_exc(limit=4))
    conn.close()
    os._exit(0)


def _messages(recv):
    while True:
        try:
            yield recv.recv()
        except EOFError:
            return


def _stop(proc) -> None:
    """Kill the child if it still runs, and reap it either way."""
    if proc.pid is None:
        return
    if proc.is_alive():
        proc.kill()
    proc.join()


def run(work: Callable[..., Any], args: Sequence[Any], *, method: str, error: type[HubbotError], what: str,
        on_message: Callable[[str, Any], None] | None = None, preload: tuple[str, ...] = ()) -> Any:
    """``work(send, *args)`` in a child started by ``method``; its result, or ``error`` with a reason.

    ``on_message(kind, payload)`` sees the child's messages as they come, llama.cpp's log lines
    (``"log"``) included. ``what`` completes "llama.cpp aborted while ..." in error messages.
    """
    ctx = _context(method, preload)
    recv, send = ctx.Pipe(duplex=False)
    err = tempfile.NamedTemporaryFile(prefix="hubbot-llama-", suffix=".log", delete=False)
    err.close()
    proc = ctx.Process(target=_child_main, args=(send, err.name, work, tuple(args)), daemon=True)
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
    result: list[Any] = []
    try:
        with interrupts.deferred():  # a signal now would leave a child we have no pid for
            proc.start()
        send.close()
        for kind, payload in _messages(recv):
            if kind == "result":
                result.append(payload)
            elif kind == "error":
                raise error(payload)
            elif kind == "crash":
                raise error(f"{what} failed: {payload.strip().splitlines()[-1]}")
            else:
                if kind == "log":
                    tail.extend(payload)
                    logs.to_logger(payload)
                if on_message is not None:
                    on_message(kind, payload)
        proc.join()
        if proc.exitcode != 0 or not result:
            tail.extend(Path(err.name).read_text(errors="replace").splitlines())
            raise error(f"llama.cpp aborted while {what} (exit {proc.exitcode}): {logs.summarize(tail)}")
        return result[0]
    finally:
        with interrupts.deferred():  # a first signal arriving now must not skip the reaping
            _stop(proc)
            recv.close()
            send.close()
            with contextlib.suppress(OSError):
                os.unlink(err.name)
