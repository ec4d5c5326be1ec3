"""Commits and tags: each made once, even when an answer is lost and the request is retried.

Every commit is made with ``parent_commit`` = the head the diff was computed on. When a commit
fails in a way worth retrying (429, 5xx, a dropped connection), the remote state is read again and
the operations recomputed: a commit whose answer was lost is found already applied, so nothing is
committed twice, and LFS objects already on the server are never sent again (a killed run resumes
the same way).
"""

from __future__ import annotations

import contextlib
from typing import Any

from hubbot.errors import HubError
from hubbot.hub.client import with_retries
from hubbot.hub.local import LocalFile
from hubbot.hub.remote import Change, PushContext, RemoteState, diff, read_remote
from hubbot.workdir import human_bytes


def _add_operation(ctx: PushContext, f: LocalFile, pbar):
    """A ``CommitOperationAdd`` that trusts the manifest hash and reports the bytes it sends."""
    from huggingface_hub import CommitOperationAdd

    class _Add(CommitOperationAdd):
        @contextlib.contextmanager
        def as_file(self, with_tqdm: bool = False):
            with open(self.path_or_fileobj, "rb") as fh:
                raw_read = fh.read

                def read(size: int = -1) -> bytes:
                    data = raw_read(size)
                    pos = fh.tell()
                    with ctx.lock:
                        # Count each byte once even when the client rewinds to retry.
                        before = ctx.uploaded.get(self.path_in_repo, 0)
                        if pos > before:
                            ctx.uploaded[self.path_in_repo] = pos
                            pbar.update(pos - before)
                    return data

                fh.read = read  # type: ignore[method-assign]
                yield fh

    op = _Add(path_in_repo=f.name, path_or_fileobj=str(f.path))
    # The manifest already knows the sha256: the client must not read the whole file again.
    op.upload_info.sha256 = bytes.fromhex(f.sha256)
    return op


def commit(ctx: PushContext, local: list[LocalFile], deletes: list[str], message: str, description: str,
           revision: str, create_pr: bool, pbar) -> Any:
    """One commit of ``local`` additions and ``deletes``, retried without ever committing twice.

    Returns the CommitInfo, ``{"pr_revision": ref}`` when a retry found its pull request already
    opened, or None when a retry found everything already in place.
    """
    from huggingface_hub import CommitOperationDelete

    state: dict[str, Any] = {"remote": read_remote(ctx, revision), "prs": pr_refs(ctx) if create_pr else set()}
    base_rev = "main" if create_pr else revision

    def operations(remote: RemoteState) -> list:
        todo = [c.local for c in diff(local, remote) if c.action != "unchanged"]
        ops: list = [_add_operation(ctx, f, pbar) for f in todo if f is not None]
        ops += [CommitOperationDelete(path_in_repo=d) for d in deletes if d in remote.files]
        return ops

    def attempt():
        ops = operations(state["remote"])
        if not ops:
            return None
        return ctx.api.create_commit(
            ctx.repo, operations=ops, commit_message=message, commit_description=description,
            revision=base_rev, create_pr=create_pr or None, parent_commit=state["remote"].head,
            num_threads=4)

    def refresh(exc: BaseException) -> None:
        # The commit may have landed with its answer lost: look before trying again.
        if create_pr:
            for ref in pr_refs(ctx) - state["prs"]:
                if not operations(read_remote(ctx, ref)):
                    state["landed_pr"] = ref
        state["remote"] = read_remote(ctx, base_rev)

    def attempt_or_landed():
        if state.get("landed_pr"):
            return {"pr_revision": state["landed_pr"]}
        return attempt()

    with ctx.hub(f"committing to {ctx.repo}"):
        # 412: another publish (a parallel CI job) committed since we read the head; refresh
        # re-reads it and recomputes the operations, so files it already added are skipped.
        return with_retries(attempt_or_landed, f"commit '{message}'", on_retry=refresh, also_retry=frozenset({412}))


def pr_refs(ctx: PushContext) -> set[str]:
    with ctx.hub("listing pull requests"):
        refs = with_retries(lambda: ctx.api.list_repo_refs(ctx.repo, include_pull_requests=True), "listing refs")
    return {r.ref for r in (refs.pull_requests or [])}


def commit_message(changes: list[Change], deletes: list[str], what: str) -> tuple[str, str]:
    """(title, description) of a commit: the files it adds, updates and removes, with sizes and hashes."""
    added = [c.name for c in changes if c.action == "add"]
    updated = [c.name for c in changes if c.action == "update"]
    parts = []
    for verb, names in (("add", added), ("update", updated), ("remove", deletes)):
        if names:
            parts.append(f"{verb} {', '.join(names) if len(names) <= 3 else f'{len(names)} files'}")
    title = f"hubbot: {'; '.join(parts) or what}"
    lines = [f"- {c.action} {c.name} ({human_bytes(c.size)}, sha256 {c.local.sha256[:12]})"
             for c in changes if c.action in ("add", "update") and c.local]
    lines += [f"- remove {d}" for d in deletes]
    return title[:200], "\n".join(lines)


def tag_head(ctx: PushContext, tag: str) -> None:
    """Tag the head of the context's revision; fine when the tag already points there, an error elsewhere."""
    from huggingface_hub import errors as hf

    head = read_remote(ctx).head
    with ctx.hub(f"creating tag {tag}"):
        refs = with_retries(lambda: ctx.api.list_repo_refs(ctx.repo), "listing tags")
        existing = {t.name: t.target_commit for t in refs.tags}
        if existing.get(tag) == head:
            return
        if tag in existing:
            raise HubError(f"tag {tag} already exists on {ctx.repo} at another commit; pick a new tag name")
        try:
            with_retries(lambda: ctx.api.create_tag(ctx.repo, tag=tag, revision=head), f"creating tag {tag}")
        except hf.HfHubHTTPError:
            # A retried tag request whose first answer was lost finds its own tag: fine if it points at head.
            refs = ctx.api.list_repo_refs(ctx.repo)
            if {t.name: t.target_commit for t in refs.tags}.get(tag) != head:
                raise
