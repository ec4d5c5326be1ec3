"""The LocalHub object: repos on disk (``RepoStore``) served over HTTP on 127.0.0.1, with the tests' controls.

Counters for the tests: ``requests`` by route name, ``downloads`` by (repo, path) for file
bodies sent (GET, not HEAD), ``bytes_received`` of LFS upload bodies (aborted ones too) and
``bytes_served`` of download bodies (``served_by_file`` the same by (repo, path)).
"""

from __future__ import annotations

import errno
import secrets
import threading
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hubbot.errors import LocalHubError
from hubbot.testing.localhub.access import Account, Fault
from hubbot.testing.localhub.handler import WRITE_ROUTES, Handler
from hubbot.testing.localhub.store import RepoStore


def _listen(host: str, port: int, handler: type[Handler]) -> ThreadingHTTPServer:
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        hint = "pick another with --port (--port 0 takes any free port)"
        if exc.errno == errno.EADDRINUSE:
            raise LocalHubError(f"port {port} on {host} is already in use: {hint}") from None
        if exc.errno == errno.EACCES:
            raise LocalHubError(f"no permission to listen on port {port} of {host}: {hint}") from None
        raise


class LocalHub(RepoStore):
    """The server. ``endpoint`` is its URL; see the module docstring for its counters."""

    def __init__(self, storage: str | Path, *, port: int = 0, tokens: dict[str, Account] | None = None,
                 host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the local hub only listens on the loopback interface")
        self.tokens: dict[str, Account] = dict(tokens or {})
        self.faults: list[Fault] = []
        self.requests: Counter = Counter()
        self.downloads: Counter = Counter()
        self.served_by_file: Counter = Counter()  # download body bytes by (repo, path)
        self.bytes_received = 0
        self.bytes_served = 0
        self.upload_key = secrets.token_hex(16)  # signs the LFS upload URLs this server hands out
        hub = self

        class ServerHandler(Handler):
            server_hub = hub

        # Listen before touching the storage: a port in use leaves no folder behind.
        self._srv = _listen(host, port, ServerHandler)
        try:
            super().__init__(storage)
        except BaseException:
            self._srv.server_close()
            raise
        self._srv.daemon_threads = True
        self.port = self._srv.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalHub:
        """Serve in a background thread (tests, ``publish --local-hub``)."""
        self._serving = True
        self._thread = threading.Thread(target=self._srv.serve_forever, name="localhub", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (``serve-hub``)."""
        self._serving = True
        self._srv.serve_forever()

    def close(self) -> None:
        """Stop serving and free the port; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        # shutdown() waits for serve_forever to return: only call it when the server runs.
        if self._serving:
            self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- test controls ---------------------------------------------------------------------
    def inject(self, route: str, **kw: Any) -> Fault:
        """Make the next ``times`` requests to ``route`` fail as described (see ``Fault``)."""
        fault = Fault(route=route, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, route: str) -> Fault | None:
        """The unspent fault on ``route``, counting this request against it; None when there is none."""
        with self.lock:
            for fault in self.faults:
                if fault.route == route and fault.hits < fault.times:
                    fault.hits += 1
                    return fault
        return None

    def write_requests(self) -> int:
        """How many requests reached a route that can change state (dry runs must make none)."""
        return sum(n for route, n in self.requests.items() if route in WRITE_ROUTES)

    def add_token(self, token: str, user: str, write: bool = True, orgs: tuple[str, ...] = ()) -> None:
        """Let ``token`` in as ``user`` (the first token ends open mode: from then on tokens decide)."""
        self.tokens[token] = Account(user, write, orgs)
