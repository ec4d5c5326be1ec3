"""A Hub-compatible HTTP server on 127.0.0.1: the publish target of the tests and the offline demo.

It answers the routes ``huggingface_hub`` 2.x uses to create a repo, upload over LFS, commit,
list, tag, branch, open pull requests, change settings and download, with the Hub's error
headers (``X-Error-Code``) so the real client raises its real exceptions. State lives on disk
under ``storage`` (``lfs/`` objects by sha256, ``blobs/`` small files by git sha1,
``repos/<owner>/<name>/repo.json`` refs and settings, ``commits/<sha>.json`` full trees), so a
restarted server keeps its repos.

Authentication: with an empty token table every request is allowed (the demo); otherwise a token
maps to a user with read or write rights, unknown tokens get 401, read-only or foreign-namespace
writes 403, private repos look missing and gated repos answer ``GatedRepo`` to users without access.
LFS uploads are checked against the announced sha256 and size and stored atomically.

Faults for the tests (``hub.inject``): an HTTP status (500s, 429 with ``RateLimit`` headers),
a connection dropped part-way through an upload, a slow (throttled) upload, a slow commit, and a
commit applied whose answer is lost.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

log = logging.getLogger(__name__)

LFS_THRESHOLD = 10 * 1024 * 1024
_BINARY_SUFFIXES = (".gguf", ".bin", ".safetensors", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".pt", ".npy")
_WRITE_ROUTES = frozenset({"create", "lfs-upload", "commit", "tag", "branch", "settings", "lfs-verify", "lfs-batch",
                           "preupload", "delete-tag", "delete-branch"})
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_KIND = r"(?P<kind>models|datasets)"


@dataclass
class Account:
    user: str
    write: bool = True
    orgs: tuple[str, ...] = ()


@dataclass
class Fault:
    """One injected fault on a route; ``times`` requests are affected (then it is spent)."""

    route: str
    times: int = 1
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None       # lfs-upload: close the connection after this many body bytes
    throttle: float | None = None       # lfs-upload: bytes per second while reading the body
    delay: float = 0.0                  # seconds before answering (a slow commit)
    lose_response: bool = False         # commit: apply it, then drop the connection without answering
    hits: int = 0


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


class LocalHub:
    """The server. ``endpoint`` is its URL; ``requests`` counts requests by route name."""

    def __init__(self, storage: str | Path, *, port: int = 0, tokens: dict[str, Account] | None = None,
                 host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the local hub only listens on the loopback interface")
        self.storage = Path(storage).resolve()
        for sub in ("lfs", "blobs", "repos", "tmp"):
            (self.storage / sub).mkdir(parents=True, exist_ok=True)
        self.tokens: dict[str, Account] = dict(tokens or {})
        self.faults: list[Fault] = []
        self.requests: Counter = Counter()
        self.bytes_received = 0   # LFS upload bodies read (including aborted ones)
        self.bytes_served = 0     # file download bodies sent
        self.lock = threading.RLock()
        self._upload_key = secrets.token_hex(16)
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._srv = ThreadingHTTPServer((host, port), Handler)
        self._srv.daemon_threads = True
        self.port = self._srv.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None
        self._serving = False

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalHub:
        self._serving = True
        self._thread = threading.Thread(target=self._srv.serve_forever, name="localhub", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._serving = True
        self._srv.serve_forever()

    def close(self) -> None:
        # shutdown() waits for serve_forever to return: only call it when the server runs.
        if self._serving or self._thread is not None:
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
        with self.lock:
            for fault in self.faults:
                if fault.route == route and fault.hits < fault.times:
                    fault.hits += 1
                    return fault
        return None

    def write_requests(self) -> int:
        """How many requests reached a route that can change state (dry runs must make none)."""
        return sum(n for route, n in self.requests.items() if route in _WRITE_ROUTES)

    def add_token(self, token: str, user: str, write: bool = True, orgs: tuple[str, ...] = ()) -> None:
        self.tokens[token] = Account(user, write, orgs)

    def grant(self, repo: str, user: str) -> None:
        """Give ``user`` access to a gated or private repo."""
        with self.lock:
            meta = self.load_repo(repo)
            if meta is not None:
                meta["access"] = sorted(set(meta.get("access", [])) | {user})
                self.save_repo(repo, meta)

    # --- storage ---------------------------------------------------------------------------
    def repo_dir(self, repo: str) -> Path:
        owner, name = repo.split("/", 1)
        return self.storage / "repos" / owner / name

    def load_repo(self, repo: str) -> dict | None:
        path = self.repo_dir(repo) / "repo.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def save_repo(self, repo: str, meta: dict) -> None:
        _write_json(self.repo_dir(repo) / "repo.json", meta)

    def load_commit(self, repo: str, sha: str) -> dict | None:
        path = self.repo_dir(repo) / "commits" / f"{sha}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def lfs_path(self, oid: str) -> Path:
        return self.storage / "lfs" / oid[:2] / oid

    def blob_path(self, sha1: str) -> Path:
        return self.storage / "blobs" / sha1[:2] / sha1

    def create_repo(self, repo: str, *, private: bool = False, gated: str | bool = False, owner: str | None = None) -> dict:
        with self.lock:
            meta = self.load_repo(repo)
            if meta is not None:
                return meta
            meta = {"id": repo, "private": private, "gated": gated, "access": [], "refs": {}, "tags": {},
                    "prs": [], "created": time.time()}
            sha = self._make_commit(repo, meta, None, {}, "initial commit", "")
            meta["refs"]["main"] = sha
            self.save_repo(repo, meta)
            return meta

    def _make_commit(self, repo: str, meta: dict, parent: str | None, files: dict, title: str, description: str) -> str:
        body = {"parent": parent, "files": files, "title": title, "description": description, "time": time.time()}
        sha = hashlib.sha1(json.dumps(body, sort_keys=True).encode() + os.urandom(8)).hexdigest()
        _write_json(self.repo_dir(repo) / "commits" / f"{sha}.json", body)
        return sha

    def resolve(self, meta: dict, rev: str) -> str | None:
        """The commit sha of a branch, tag, PR ref or sha."""
        rev = unquote(rev)
        if rev in meta["refs"]:
            return meta["refs"][rev]
        if rev in meta["tags"]:
            return meta["tags"][rev]
        if re.fullmatch(r"[0-9a-f]{40}", rev) and (self.repo_dir(meta["id"]) / "commits" / f"{rev}.json").is_file():
            return rev
        return None

    def files(self, repo: str, rev: str = "main") -> dict[str, dict]:
        """The tree of ``repo`` at ``rev``: path -> {"size", "lfs": oid} or {"size", "blob": sha1}."""
        meta = self.load_repo(repo)
        if meta is None:
            raise KeyError(repo)
        sha = self.resolve(meta, rev)
        if sha is None:
            raise KeyError(rev)
        return dict(self.load_commit(repo, sha)["files"])

    def read_file(self, repo: str, path: str, rev: str = "main") -> bytes:
        entry = self.files(repo, rev)[path]
        return (self.lfs_path(entry["lfs"]) if "lfs" in entry else self.blob_path(entry["blob"])).read_bytes()

    def commits(self, repo: str, rev: str = "main") -> list[dict]:
        """Commits from ``rev`` back to the first, newest first (each with its ``id``)."""
        meta = self.load_repo(repo)
        sha = self.resolve(meta, rev) if meta else None
        out = []
        while sha:
            commit = self.load_commit(repo, sha)
            out.append({"id": sha, **commit})
            sha = commit["parent"]
        return out


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


class _Dropped(Exception):
    """The handler closed the connection on purpose (an injected fault)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: LocalHub

    def log_message(self, *args) -> None:  # requests would drown test output
        pass

    # --- plumbing ----------------------------------------------------------------------------
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
        extra = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
        self._json({"error": message}, status, extra)

    def _drop(self) -> None:
        """Close the socket without an answer, as a broken network would."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        raise _Dropped()

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
            self.rfile.readline()

    def _account(self) -> tuple[Account | None, bool]:
        """(account, token_sent). In open mode (no token table) everyone is the 'local' writer."""
        hub = self.server_hub
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.startswith("Bearer ") else None
        if not hub.tokens:
            return Account("local", True), token is not None
        return (hub.tokens.get(token) if token else None), token is not None

    def _dispatch(self) -> None:
        hub = self.server_hub
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        path = url.path
        route, handler, groups = self._route(path)
        hub.requests[route] += 1
        try:
            auth = self.headers.get("Authorization") or ""
            if hub.tokens and auth.startswith("Bearer ") and auth[7:].strip() not in hub.tokens and route != "lfs-upload":
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
                self._error(404, f"no route {self.command} {path}")
                return
            handler(fault=fault, **groups)
        except _Dropped:
            return
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _body_discard(self) -> None:
        if self.command in ("POST", "PUT"):
            with contextlib.suppress(OSError, ValueError):
                self._body()

    def _route(self, path: str):
        m = self.command
        table = [
            ("GET", r"^/api/whoami-v2$", "whoami", self.h_whoami),
            ("POST", r"^/api/repos/create$", "create", self.h_create),
            ("POST", r"^/api/validate-yaml$", "validate-yaml", self.h_validate_yaml),
            ("GET", rf"^/api/{_KIND}/{_REPO}$", "revision", self.h_info),
            ("GET", rf"^/api/{_KIND}/{_REPO}/revision/(?P<rev>[^/]+)$", "revision", self.h_info),
            ("POST", rf"^/api/{_KIND}/{_REPO}/preupload/(?P<rev>[^/]+)$", "preupload", self.h_preupload),
            ("POST", rf"^/api/{_KIND}/{_REPO}/commit/(?P<rev>[^/]+)$", "commit", self.h_commit),
            ("POST", rf"^/api/{_KIND}/{_REPO}/paths-info/(?P<rev>[^/]+)$", "paths-info", self.h_paths_info),
            ("GET", rf"^/api/{_KIND}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?$", "tree", self.h_tree),
            ("GET", rf"^/api/{_KIND}/{_REPO}/refs$", "refs", self.h_refs),
            ("GET", rf"^/api/{_KIND}/{_REPO}/commits/(?P<rev>[^/]+)$", "commits", self.h_commits),
            ("POST", rf"^/api/{_KIND}/{_REPO}/tag/(?P<rev>[^/]+)$", "tag", self.h_tag),
            ("DELETE", rf"^/api/{_KIND}/{_REPO}/tag/(?P<rev>[^/]+)$", "delete-tag", self.h_delete_tag),
            ("POST", rf"^/api/{_KIND}/{_REPO}/branch/(?P<rev>[^/]+)$", "branch", self.h_branch),
            ("PUT", rf"^/api/{_KIND}/{_REPO}/settings$", "settings", self.h_settings),
            ("POST", r"^/(?:datasets/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$", "lfs-batch", self.h_lfs_batch),
            ("POST", r"^/(?:datasets/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/verify$", "lfs-verify", self.h_lfs_verify),
            ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", "lfs-upload", self.h_lfs_upload),
            ("GET", r"^/(?:datasets/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", "resolve", self.h_resolve),
            ("HEAD", r"^/(?:datasets/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", "resolve", self.h_resolve),
        ]
        for method, pattern, name, handler in table:
            if method == m and (match := re.match(pattern, path)):
                groups = {k: v for k, v in match.groupdict().items() if k != "kind"}
                return name, handler, groups
        return "unknown", None, {}

    # --- access checks -----------------------------------------------------------------------
    def _readable(self, repo: str) -> dict | None:
        """The repo's metadata when the caller may read it; otherwise the Hub's answer is sent and None returned."""
        hub = self.server_hub
        account, sent = self._account()
        meta = hub.load_repo(repo)
        user = account.user if account else None
        owner = repo.split("/")[0]
        allowed = meta is not None and (not hub.tokens or user == owner or (account and owner in account.orgs)
                                        or user in meta.get("access", []))
        if meta is None or (meta["private"] and not allowed):
            self._error(401 if not sent else 404, "Repository not found", "RepoNotFound")
            return None
        if meta.get("gated") and not allowed and self._route_is_file_access():
            self._error(401 if not sent else 403, f"Access to model {repo} is restricted. You must have access to it "
                        "and be authenticated to access it. Please log in.", "GatedRepo")
            return None
        return meta

    def _route_is_file_access(self) -> bool:
        return "/resolve/" in self.path

    def _writable(self, repo: str) -> dict | None:
        meta = self._readable(repo)
        if meta is None:
            return None
        if not self._may_write(repo.split("/")[0]):
            return None
        return meta

    def _may_write(self, namespace: str) -> bool:
        account, sent = self._account()
        if account is None:
            self._error(401, "You must be authenticated to do this (no token sent)" if not sent
                        else "Invalid credentials in Authorization header")
            return False
        if not self.server_hub.tokens:
            return True
        if not account.write:
            self._error(403, "This token has read access only; a token with write access is needed")
            return False
        if namespace != account.user and namespace not in account.orgs:
            self._error(403, f"You don't have the rights to write to the namespace {namespace}")
            return False
        return True

    # --- routes ------------------------------------------------------------------------------
    def h_whoami(self, fault: Fault | None) -> None:
        account, _ = self._account()
        if account is None:
            self._error(401, "Invalid user token")
            return
        self._json({"type": "user", "name": account.user, "orgs": [{"name": o} for o in account.orgs],
                    "auth": {"accessToken": {"role": "write" if account.write else "read"}}})

    def h_create(self, fault: Fault | None) -> None:
        hub = self.server_hub
        body = json.loads(self._body() or b"{}")
        account, _ = self._account()
        namespace = body.get("organization") or (account.user if account else None)
        if not self._may_write(namespace or ""):
            return
        repo = f"{namespace}/{body['name']}"
        with hub.lock:
            if hub.load_repo(repo) is not None:
                self._error(409, "You already created this model repo", headers={})
                return
            private = body.get("visibility") == "private" or bool(body.get("private"))
            hub.create_repo(repo, private=private)
        self._json({"url": f"{hub.endpoint}/{repo}", "name": repo, "id": repo})

    def h_validate_yaml(self, fault: Fault | None) -> None:
        body = json.loads(self._body() or b"{}")
        content = body.get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        try:
            data = yaml.safe_load(m.group(1)) if m else {}
            if data is not None and not isinstance(data, dict):
                raise ValueError("the metadata block must be a mapping")
        except (yaml.YAMLError, ValueError) as exc:
            self._json({"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []}, 400)
            return
        self._json({"errors": [], "warnings": []})

    def h_info(self, fault: Fault | None, repo: str, rev: str = "main") -> None:
        hub = self.server_hub
        meta = self._readable(repo)
        if meta is None:
            return
        sha = hub.resolve(meta, rev)
        if sha is None:
            self._error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
            return
        files = hub.load_commit(repo, sha)["files"]
        self._json({"id": repo, "modelId": repo, "sha": sha, "private": meta["private"], "gated": meta.get("gated", False),
                    "disabled": False, "tags": [], "downloads": 0, "likes": 0, "author": repo.split("/")[0],
                    "siblings": [{"rfilename": p, "size": e["size"]} for p, e in sorted(files.items())]})

    def _mode(self, path: str, size: int, sample: bytes) -> str:
        if size >= LFS_THRESHOLD or path.lower().endswith(_BINARY_SUFFIXES) or b"\0" in sample:
            return "lfs"
        return "regular"

    def h_preupload(self, fault: Fault | None, repo: str, rev: str) -> None:
        hub = self.server_hub
        body = json.loads(self._body() or b"{}")
        meta = self._writable(repo)
        if meta is None:
            return
        sha = hub.resolve(meta, rev) or (hub.resolve(meta, "main") if "create_pr" in self.query else None)
        files = hub.load_commit(repo, sha)["files"] if sha else {}
        out = []
        for f in body.get("files", []):
            mode = self._mode(f["path"], int(f["size"]), base64.b64decode(f.get("sample", "")))
            entry = files.get(f["path"])
            oid = None
            if entry is not None:
                oid = entry.get("lfs") if mode == "lfs" else entry.get("blob")
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json({"files": out, "commitOid": sha})

    def h_lfs_batch(self, fault: Fault | None, repo: str) -> None:
        hub = self.server_hub
        body = json.loads(self._body() or b"{}")
        if self._writable(repo) is None:
            return
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            path = hub.lfs_path(oid)
            if path.is_file() and path.stat().st_size == size:
                objects.append({"oid": oid, "size": size})
                continue
            sig = hashlib.sha256(f"{hub._upload_key}:{oid}:{size}".encode()).hexdigest()[:32]
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{hub.endpoint}/lfs-upload/{oid}?size={size}&sig={sig}", "header": {}},
                "verify": {"href": f"{hub.endpoint}/{repo}.git/info/lfs/objects/verify", "header": {}},
            }})
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   headers={"Content-Type": "application/vnd.git-lfs+json"})

    def h_lfs_upload(self, fault: Fault | None, oid: str) -> None:
        hub = self.server_hub
        size = int((self.query.get("size") or ["-1"])[0])
        sig = (self.query.get("sig") or [""])[0]
        expected = hashlib.sha256(f"{hub._upload_key}:{oid}:{size}".encode()).hexdigest()[:32]
        if not secrets.compare_digest(sig, expected):
            self._body_discard()
            self._error(403, "upload URL signature does not match")
            return
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        length = None if chunked else int(self.headers.get("Content-Length") or 0)
        digest = hashlib.sha256()
        received = 0
        fd, tmp = tempfile.mkstemp(dir=hub.storage / "tmp", prefix=f"{oid}.")
        try:
            with os.fdopen(fd, "wb") as out:
                source = self._chunks() if chunked else self._fixed(length or 0)
                started = time.monotonic()
                for block in source:
                    if fault is not None and fault.drop_after is not None and received + len(block) > fault.drop_after:
                        keep = max(0, fault.drop_after - received)
                        with hub.lock:
                            hub.bytes_received += keep
                        self._drop()
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    with hub.lock:
                        hub.bytes_received += len(block)
                    if fault is not None and fault.throttle:
                        ahead = received / fault.throttle - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
            if received != size:
                self._error(400, f"size mismatch: announced {size}, received {received}")
                return
            if digest.hexdigest() != oid:
                self._error(400, f"sha256 mismatch: announced {oid}, received {digest.hexdigest()}")
                return
            final = hub.lfs_path(oid)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def _fixed(self, length: int):
        left = length
        while left > 0:
            block = self.rfile.read(min(1 << 20, left))
            if not block:
                return
            left -= len(block)
            yield block

    def h_lfs_verify(self, fault: Fault | None, repo: str) -> None:
        body = json.loads(self._body() or b"{}")
        path = self.server_hub.lfs_path(body.get("oid", "0" * 64))
        if not path.is_file() or path.stat().st_size != int(body.get("size", -1)):
            self._error(404, "object not found or of another size")
            return
        self._json({"ok": True})

    def h_commit(self, fault: Fault | None, repo: str, rev: str) -> None:
        hub = self.server_hub
        raw = self._body()
        meta = self._writable(repo)
        if meta is None:
            return
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        create_pr = "create_pr" in self.query
        rev = unquote(rev)
        with hub.lock:
            meta = hub.load_repo(repo)
            branch = "main" if create_pr else rev
            if branch not in meta["refs"]:
                self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                return
            head = meta["refs"][branch]
            parent = header.get("parentCommit")
            if parent and parent != head:
                self._error(412, "A commit has happened since. Please refresh and try again.")
                return
            files = dict(hub.load_commit(repo, head)["files"])
            for op in lines:
                key, value = op["key"], op.get("value", {})
                if key == "file":
                    data = base64.b64decode(value["content"])
                    sha1 = git_blob_sha1(data)
                    blob = hub.blob_path(sha1)
                    if not blob.is_file():
                        blob.parent.mkdir(parents=True, exist_ok=True)
                        blob.write_bytes(data)
                    files[value["path"]] = {"size": len(data), "blob": sha1}
                elif key == "lfsFile":
                    oid = value["oid"]
                    obj = hub.lfs_path(oid)
                    size = value.get("size")
                    if not obj.is_file() or (size is not None and obj.stat().st_size != int(size)):
                        self._error(422, f"LFS object {oid} of {value['path']} was not uploaded")
                        return
                    files[value["path"]] = {"size": obj.stat().st_size, "lfs": oid}
                elif key == "deletedFile":
                    if value["path"] not in files:
                        self._error(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                        return
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: e for p, e in files.items() if not p.startswith(prefix)}
            sha = hub._make_commit(repo, meta, head, files, header.get("summary", ""), header.get("description", ""))
            pr_url = None
            if create_pr:
                num = len(meta["prs"]) + 1
                meta["prs"].append({"num": num, "title": header.get("summary", ""), "status": "open"})
                meta["refs"][f"refs/pr/{num}"] = sha
                pr_url = f"{hub.endpoint}/{repo}/discussions/{num}"
            else:
                meta["refs"][branch] = sha
            hub.save_repo(repo, meta)
        if fault is not None and fault.lose_response:
            self._drop()
        self._json({"commitUrl": f"{hub.endpoint}/{repo}/commit/{sha}", "commitOid": sha,
                    "pullRequestUrl": pr_url, "success": True})

    def _entry(self, path: str, e: dict) -> dict:
        if "lfs" in e:
            pointer = lfs_pointer(e["lfs"], e["size"])
            return {"type": "file", "path": path, "size": e["size"], "oid": git_blob_sha1(pointer),
                    "lfs": {"oid": e["lfs"], "size": e["size"], "pointerSize": len(pointer)}}
        return {"type": "file", "path": path, "size": e["size"], "oid": e["blob"]}

    def _tree_at(self, repo: str, rev: str) -> tuple[dict, dict] | None:
        hub = self.server_hub
        meta = self._readable(repo)
        if meta is None:
            return None
        sha = hub.resolve(meta, rev)
        if sha is None:
            self._error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
            return None
        return meta, hub.load_commit(repo, sha)["files"]

    def h_paths_info(self, fault: Fault | None, repo: str, rev: str) -> None:
        form = parse_qs(self._body().decode())
        found = self._tree_at(repo, rev)
        if found is None:
            return
        files = found[1]
        folders = {str(Path(p).parent) for p in files}
        out = []
        for p in form.get("paths", []):
            if p in files:
                out.append(self._entry(p, files[p]))
            elif p in folders:
                out.append({"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0})
        self._json(out)

    def h_tree(self, fault: Fault | None, repo: str, rev: str, sub: str | None = None) -> None:
        found = self._tree_at(repo, rev)
        if found is None:
            return
        files = found[1]
        prefix = (unquote(sub).strip("/") + "/") if sub else ""
        recursive = (self.query.get("recursive") or ["False"])[0].lower() in ("1", "true")
        out: list[dict] = []
        dirs: set[str] = set()
        for p, e in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0})
            if recursive or len(parts) == 1:
                out.append(self._entry(p, e))
        if sub and not out:
            self._error(404, f"{sub} does not exist", "EntryNotFound")
            return
        self._json(out)

    def h_refs(self, fault: Fault | None, repo: str) -> None:
        meta = self._readable(repo)
        if meta is None:
            return
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in meta["refs"].items()
                    if not n.startswith("refs/")]
        tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in meta["tags"].items()]
        data: dict[str, Any] = {"branches": branches, "tags": tags, "converts": []}
        if "include_prs" in self.query:
            data["pullRequests"] = [{"name": n, "ref": n, "targetCommit": s} for n, s in meta["refs"].items()
                                    if n.startswith("refs/pr/")]
        self._json(data)

    def h_commits(self, fault: Fault | None, repo: str, rev: str) -> None:
        hub = self.server_hub
        meta = self._readable(repo)
        if meta is None:
            return
        if hub.resolve(meta, rev) is None:
            self._error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
            return
        out = [{"id": c["id"], "title": c["title"], "message": c["description"], "authors": [],
                "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(c["time"]))}
               for c in hub.commits(repo, unquote(rev))]
        self._json(out)

    def h_tag(self, fault: Fault | None, repo: str, rev: str) -> None:
        hub = self.server_hub
        body = json.loads(self._body() or b"{}")
        if self._writable(repo) is None:
            return
        with hub.lock:
            meta = hub.load_repo(repo)
            sha = hub.resolve(meta, rev)
            if sha is None:
                self._error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
                return
            if body["tag"] in meta["tags"]:
                self._error(409, f"Tag {body['tag']} already exists")
                return
            meta["tags"][body["tag"]] = sha
            hub.save_repo(repo, meta)
        self._json({"ok": True})

    def h_delete_tag(self, fault: Fault | None, repo: str, rev: str) -> None:
        hub = self.server_hub
        if self._writable(repo) is None:
            return
        with hub.lock:
            meta = hub.load_repo(repo)
            if meta["tags"].pop(unquote(rev), None) is None:
                self._error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
                return
            hub.save_repo(repo, meta)
        self._json({"ok": True})

    def h_branch(self, fault: Fault | None, repo: str, rev: str) -> None:
        hub = self.server_hub
        body = json.loads(self._body() or b"{}")
        if self._writable(repo) is None:
            return
        branch = unquote(rev)
        with hub.lock:
            meta = hub.load_repo(repo)
            if branch in meta["refs"]:
                self._error(409, f"Reference refs/heads/{branch} already exists")
                return
            start = hub.resolve(meta, body.get("startingPoint") or "main")
            if start is None:
                self._error(404, "Invalid starting point", "RevisionNotFound")
                return
            meta["refs"][branch] = start
            hub.save_repo(repo, meta)
        self._json({"ok": True})

    def h_settings(self, fault: Fault | None, repo: str) -> None:
        hub = self.server_hub
        body = json.loads(self._body() or b"{}")
        if self._writable(repo) is None:
            return
        with hub.lock:
            meta = hub.load_repo(repo)
            if "gated" in body:
                if body["gated"] not in ("auto", "manual", False):
                    self._error(400, "gated must be 'auto', 'manual' or false")
                    return
                meta["gated"] = body["gated"]
            if "visibility" in body:
                meta["private"] = body["visibility"] == "private"
            if "private" in body:
                meta["private"] = bool(body["private"])
            hub.save_repo(repo, meta)
        self._json({"ok": True})

    def h_resolve(self, fault: Fault | None, repo: str, rev: str, file: str) -> None:
        hub = self.server_hub
        found = self._tree_at(repo, rev)
        if found is None:
            return
        meta, files = found
        file = unquote(file)
        entry = files.get(file)
        if entry is None:
            self._error(404, f"{file} does not exist", "EntryNotFound")
            return
        sha = hub.resolve(meta, rev)
        path = hub.lfs_path(entry["lfs"]) if "lfs" in entry else hub.blob_path(entry["blob"])
        etag = f'"{entry.get("lfs") or entry["blob"]}"'
        size = entry["size"]
        start = 0
        if self.command == "GET" and (rng := re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")):
            start = min(int(rng.group(1)), size)
        headers = {"X-Repo-Commit": sha, "ETag": etag, "Content-Length": str(size - start),
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if "lfs" in entry:
            headers |= {"X-Linked-Etag": etag, "X-Linked-Size": str(size)}
        if start:
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        self.send_response(206 if start else 200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            while block := fh.read(1 << 20):
                self.wfile.write(block)
                with hub.lock:
                    hub.bytes_served += len(block)


def repo_url(endpoint: str, repo: str) -> str:
    return f"{endpoint.rstrip('/')}/{quote(repo)}"


def remove_storage(storage: Path) -> None:
    """Delete a local hub's storage folder (tests and the demo's --fresh)."""
    shutil.rmtree(storage, ignore_errors=True)
