"""HTTP plumbing of the local Hub: the route table, dispatch (auth, injected faults), bodies and answers.

The route handlers themselves are mixins: reads (``ReadRoutes``), writes (``WriteRoutes``) and
access checks (``AccessChecks``); ``Handler`` puts them together. ``server_hub`` is the LocalHub
the handler serves, set on a per-server subclass.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hubbot.testing.localhub.access import AccessChecks
from hubbot.testing.localhub.reads import ReadRoutes
from hubbot.testing.localhub.writes import WriteRoutes

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_KIND = r"(?P<kind>models|datasets)"
_GIT = r"^/(?:datasets/)?(?P<repo>[^/]+/[^/]+)"
_API = rf"^/api/{_KIND}/{_REPO}"

# (method, path pattern, route name, handler method); the route name keys requests and faults.
ROUTES = [
    ("GET", r"^/api/whoami-v2$", "whoami", "h_whoami"),
    ("POST", r"^/api/repos/create$", "create", "h_create"),
    ("POST", r"^/api/validate-yaml$", "validate-yaml", "h_validate_yaml"),
    ("GET", rf"{_API}$", "revision", "h_info"),
    ("GET", rf"{_API}/revision/(?P<rev>[^/]+)$", "revision", "h_info"),
    ("POST", rf"{_API}/preupload/(?P<rev>[^/]+)$", "preupload", "h_preupload"),
    ("POST", rf"{_API}/commit/(?P<rev>[^/]+)$", "commit", "h_commit"),
    ("POST", rf"{_API}/paths-info/(?P<rev>[^/]+)$", "paths-info", "h_paths_info"),
    ("GET", rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?$", "tree", "h_tree"),
    ("GET", rf"{_API}/refs$", "refs", "h_refs"),
    ("GET", rf"{_API}/commits/(?P<rev>[^/]+)$", "commits", "h_commits"),
    ("POST", rf"{_API}/tag/(?P<rev>[^/]+)$", "tag", "h_tag"),
    ("DELETE", rf"{_API}/tag/(?P<rev>[^/]+)$", "delete-tag", "h_delete_tag"),
    ("POST", rf"{_API}/branch/(?P<rev>[^/]+)$", "branch", "h_branch"),
    ("PUT", rf"{_API}/settings$", "settings", "h_settings"),
    ("POST", rf"{_GIT}\.git/info/lfs/objects/batch$", "lfs-batch", "h_lfs_batch"),
    ("POST", rf"{_GIT}\.git/info/lfs/objects/verify$", "lfs-verify", "h_lfs_verify"),
    ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", "lfs-upload", "h_lfs_upload"),
    ("GET", rf"{_GIT}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", "resolve", "h_resolve"),
    ("HEAD", rf"{_GIT}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", "resolve", "h_resolve"),
]

class Dropped(Exception):
    """The handler closed the connection on purpose (an injected fault)."""


# Routes that can change state (dry runs must reach none of them).
WRITE_ROUTES = frozenset({"create", "lfs-upload", "commit", "tag", "branch", "settings", "lfs-verify", "lfs-batch",
                          "preupload", "delete-tag", "delete-branch"})


class Handler(AccessChecks, ReadRoutes, WriteRoutes, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: Any  # the LocalHub this server belongs to (set on a subclass per server)

    def log_message(self, *args) -> None:  # requests would drown test output
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # --- answers -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        """The Hub's error answer: the client reads ``X-Error-Code`` to pick its exception class."""
        extra = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
        self._json({"error": message}, status, extra)

    def _drop(self) -> None:
        """Close the socket without an answer, as a broken network would."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        raise Dropped()

    # --- request bodies ----------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return b"".join(self._chunks())
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _chunks(self):
        while True:
            line = self.rfile.readline()
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return
            yield self.rfile.read(size)

    def _fixed(self, length: int):
        left = length
        while left > 0:
            block = self.rfile.read(min(1 << 20, left))
            if not block:
                return
            left -= len(block)
            yield block

    def _body_discard(self) -> None:
        if self.command in ("POST", "PUT"):
            with contextlib.suppress(OSError, ValueError):
                self._body()

    # --- dispatch ----------------------------------------------------------------------------
    def _route(self, path: str):
        for method, pattern, name, handler in ROUTES:
            if method == self.command and (match := re.match(pattern, path)):
                groups = {k: v for k, v in match.groupdict().items() if k != "kind"}
                return name, getattr(self, handler), groups
        return "unknown", None, {}

    def _dispatch(self) -> None:
        hub = self.server_hub
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        route, handler, groups = self._route(url.path)
        hub.requests[route] += 1
        try:
            # Upload URLs carry their own signature, as the Hub's storage URLs do: no token decides there.
            if route != "lfs-upload" and self._token_is_unknown():
                self._body_discard()
                self._error(401, "Invalid credentials in Authorization header")
                return
            fault = hub.take_fault(route)
            if fault is not None and fault.status is not None:
                self._body_discard()
                self._error(fault.status, f"injected fault {fault.status}", headers=fault.headers)
                return
            if handler is None:
                self._body_discard()
                self._error(404, f"no route {self.command} {url.path}")
                return
            handler(fault=fault, **groups)
        except Dropped:
            return
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
