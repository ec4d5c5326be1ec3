"""Write routes of the local Hub: create, preupload, LFS batch/upload/verify, NDJSON commits, tags, branches, settings.

LFS uploads go to signed URLs on this server, are checked against the announced sha256 and size
while they stream to a temporary file, and become objects only when both match. A commit naming an
LFS object that was never uploaded is refused, as the Hub refuses it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
import time
from urllib.parse import unquote

import yaml

from hubbot.testing.localhub.access import Fault
from hubbot.testing.localhub.store import upload_mode


class WriteRoutes:
    """Request-handler mixin: the routes that change a repo (see ``handler.ROUTES``)."""

    def _json_body(self) -> dict:
        return json.loads(self._body() or b"{}")

    def h_create(self, fault: Fault | None) -> None:
        hub = self.server_hub
        body = self._json_body()
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
        content = self._json_body().get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        try:
            data = yaml.safe_load(m.group(1)) if m else {}
            if data is not None and not isinstance(data, dict):
                raise ValueError("the metadata block must be a mapping")
        except (yaml.YAMLError, ValueError) as exc:
            self._json({"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []}, 400)
            return
        self._json({"errors": [], "warnings": []})

    def h_preupload(self, fault: Fault | None, repo: str, rev: str) -> None:
        hub = self.server_hub
        body = self._json_body()
        meta = self._writable(repo)
        if meta is None:
            return
        sha = hub.resolve(meta, rev) or (hub.resolve(meta, "main") if "create_pr" in self.query else None)
        files = hub.load_commit(repo, sha)["files"] if sha else {}
        out = []
        for f in body.get("files", []):
            mode = upload_mode(f["path"], int(f["size"]), base64.b64decode(f.get("sample", "")))
            entry = files.get(f["path"])
            oid = None
            if entry is not None:
                oid = entry.get("lfs") if mode == "lfs" else entry.get("blob")
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json({"files": out, "commitOid": sha})

    def _upload_signature(self, oid: str, size: int) -> str:
        return hashlib.sha256(f"{self.server_hub.upload_key}:{oid}:{size}".encode()).hexdigest()[:32]

    def h_lfs_batch(self, fault: Fault | None, repo: str) -> None:
        hub = self.server_hub
        body = self._json_body()
        if self._writable(repo) is None:
            return
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            path = hub.lfs_path(oid)
            if path.is_file() and path.stat().st_size == size:
                objects.append({"oid": oid, "size": size})
                continue
            sig = self._upload_signature(oid, size)
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
        if not secrets.compare_digest(sig, self._upload_signature(oid, size)):
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

    def h_lfs_verify(self, fault: Fault | None, repo: str) -> None:
        body = self._json_body()
        path = self.server_hub.lfs_path(body.get("oid", "0" * 64))
        if not path.is_file() or path.stat().st_size != int(body.get("size", -1)):
            self._error(404, "object not found or of another size")
            return
        self._json({"ok": True})

    def h_commit(self, fault: Fault | None, repo: str, rev: str) -> None:
        hub = self.server_hub
        raw = self._body()
        if self._writable(repo) is None:
            return
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        create_pr = "create_pr" in self.query
        with hub.lock:
            meta = hub.load_repo(repo)
            branch = "main" if create_pr else unquote(rev)
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
                    files[value["path"]] = hub.store_blob(base64.b64decode(value["content"]))
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
            sha = hub.make_commit(repo, head, files, header.get("summary", ""), header.get("description", ""))
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

    def h_tag(self, fault: Fault | None, repo: str, rev: str) -> None:
        tag = self._json_body().get("tag")
        if self._writable(repo) is None:
            return
        if not isinstance(tag, str) or not tag:
            self._error(400, "the body must name the tag: {\"tag\": \"<name>\"}")
            return
        try:
            self.server_hub.create_tag(repo, tag, unquote(rev))
        except KeyError:
            self._error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
            return
        except ValueError as exc:
            self._error(409, str(exc))
            return
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
        body = self._json_body()
        if self._writable(repo) is None:
            return
        try:
            self.server_hub.create_branch(repo, unquote(rev), body.get("startingPoint") or "main")
        except KeyError:
            self._error(404, "Invalid starting point", "RevisionNotFound")
            return
        except ValueError as exc:
            self._error(409, str(exc))
            return
        self._json({"ok": True})

    def h_settings(self, fault: Fault | None, repo: str) -> None:
        hub = self.server_hub
        body = self._json_body()
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
