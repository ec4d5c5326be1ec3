"""``hubbot publish``: build, measure, render the card, then push only what changed.

The push, in order:

1. read the remote state (head commit, tree with each file's LFS sha256, gating) — no local file
   is opened before this diff; unchanged files are recognised by the manifest's sha256;
2. create the repo when missing (``target.private``), a missing ``--revision`` branch from main,
   and apply gating when the config or the upstream asks for it and the repo differs;
3. commit 1 — every new or changed ladder file, in one commit whose message lists them;
4. commit 2 — README.md (and any card assets) together with the ``--prune`` deletions.

Why this order keeps the card honest: after commit 1 the old card still names only files that
exist (updated files keep their names; new ones are simply not listed yet); commit 2 switches the
card and removes the files it no longer names in one atomic step. An unchanged publish makes no
commit and uploads nothing.

Every commit is made with ``parent_commit`` = the head the diff was computed on. When a commit
fails in a way worth retrying (429, 5xx, a dropped connection), the remote state is read again and
the operations recomputed: a commit whose answer was lost is found already applied, so nothing is
committed twice, and LFS objects already on the server are never sent again (a killed run resumes
the same way).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubbot.config import Config, parse_size
from hubbot.errors import HubError
from hubbot.hub.client import hub_endpoint, hub_errors, make_api, remote_gated, with_retries
from hubbot.progress import bar
from hubbot.workdir import WorkDir, human_bytes, sha256_file

log = logging.getLogger(__name__)

CARD_NAME = "README.md"


@dataclass
class LocalFile:
    """A file to publish: its name in the repo, where it is, and its manifest size and sha256."""

    name: str
    path: Path
    size: int
    sha256: str
    role: str  # "variant", "shard", "imatrix" or "card"


@dataclass
class RemoteFile:
    size: int
    sha256: str | None  # LFS files only
    blob_id: str


@dataclass
class RemoteState:
    exists: bool
    head: str | None = None
    files: dict[str, RemoteFile] = field(default_factory=dict)
    gated: Any = None


@dataclass
class Change:
    action: str  # "add", "update", "unchanged" or "delete"
    name: str
    size: int
    local: LocalFile | None = None


@dataclass
class PushContext:
    cfg: Config
    api: Any
    repo: str
    endpoint: str
    revision: str
    create_pr: bool
    uploaded: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hub(self, action: str):
        return hub_errors(self.repo, action, self.endpoint, self.revision)


# --- local side ------------------------------------------------------------------------------

def _manifest_sha(path: Path, entry: dict) -> str:
    """The manifest's sha256 when size and mtime still match the file, else a fresh hash."""
    st = path.stat()
    if st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns") and entry.get("sha256"):
        return entry["sha256"]
    log.warning("%s changed since it was recorded; hashing it again", path.name)
    with bar(st.st_size, f"sha256 {path.name}", unit="B") as pbar:
        return sha256_file(path, pbar)


def ladder_files(cfg: Config, work: WorkDir, only: Iterable[str] | None = None) -> list[LocalFile]:
    """Built files of the selected variants (shards where ``max_shard_size`` asks), plus the imatrix."""
    from hubbot.gguf_io.shard import ensure_shards

    manifest = work.manifest
    max_size = parse_size(cfg.target.max_shard_size) if cfg.target.max_shard_size is not None else None
    names = set(only or [])
    out: list[LocalFile] = []
    for v in cfg.variants:
        if names and v.name not in names:
            continue
        fname = cfg.file_name(v)
        entry = manifest.get(fname)
        path = work.out / fname
        if entry is None or not path.is_file():
            continue
        if max_size is not None and entry.get("size", 0) > max_size:
            for s in ensure_shards(work, fname, max_size):
                out.append(LocalFile(s["file"], work.out / s["file"], s["size"], s["sha256"], "shard"))
            continue
        out.append(LocalFile(fname, path, path.stat().st_size, _manifest_sha(path, entry), "variant"))
    for fname, entry in manifest.entries.items():
        path = work.out / fname
        if entry.get("kind") == "imatrix" and path.is_file():
            out.append(LocalFile(fname, path, path.stat().st_size, _manifest_sha(path, entry), "imatrix"))
    return out


def ladder_names(cfg: Config) -> list[str]:
    """Name prefixes of every ladder file (a variant's file or its shards)."""
    return [cfg.file_name(v).removesuffix(".gguf") for v in cfg.variants]


def in_ladder(cfg: Config, name: str) -> bool:
    from hubbot.gguf_io.info import SHARD_RE

    stems = set(ladder_names(cfg))
    if name.removesuffix(".gguf") in stems:
        return True
    m = SHARD_RE.match(name)
    return bool(m and m.group("stem") in stems)


def _git_blob_sha1(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --- remote side -----------------------------------------------------------------------------

def read_remote(ctx: PushContext, revision: str | None = None) -> RemoteState:
    """The repo's head at ``revision`` (default: the context's) and its files with LFS hashes."""
    from huggingface_hub import errors as hf

    rev = revision or ctx.revision
    api = ctx.api

    def info():
        try:
            return api.model_info(ctx.repo, revision=rev)
        except hf.RevisionNotFoundError:
            return "no-revision"
        except hf.RepositoryNotFoundError as exc:
            if getattr(getattr(exc, "response", None), "status_code", 404) == 401 and api.token:
                raise
            return None

    with ctx.hub("reading the repo"):
        found = with_retries(info, "reading the repo")
    if found is None:
        return RemoteState(exists=False)
    if found == "no-revision":
        return RemoteState(exists=True, head=None)
    head = found.sha
    with ctx.hub("listing the repo's files"):
        entries = with_retries(lambda: list(api.list_repo_tree(ctx.repo, revision=head, recursive=True)),
                               "listing the repo's files")
    files = {}
    for e in entries:
        if getattr(e, "lfs", None) is not None or hasattr(e, "blob_id"):
            lfs = getattr(e, "lfs", None)
            files[e.path] = RemoteFile(e.size, lfs.sha256 if lfs else None, e.blob_id)
    return RemoteState(exists=True, head=head, files=files, gated=getattr(found, "gated", None))


def diff(local: list[LocalFile], remote: RemoteState) -> list[Change]:
    """add / update / unchanged for each local file, from sizes and hashes only (no file is read)."""
    changes = []
    for f in local:
        r = remote.files.get(f.name)
        if r is None:
            changes.append(Change("add", f.name, f.size, f))
        elif r.size == f.size and _same(f, r):
            changes.append(Change("unchanged", f.name, f.size, f))
        else:
            changes.append(Change("update", f.name, f.size, f))
    return changes


def _same(f: LocalFile, r: RemoteFile) -> bool:
    if r.sha256 is not None:
        return r.sha256 == f.sha256
    # A small file stored directly in git (README.md): compare git blob ids; it is small to read.
    return f.role == "card" and _git_blob_sha1(f.path.read_bytes()) == r.blob_id


def prune_candidates(cfg: Config, local: list[LocalFile], remote: RemoteState, keep: set[str]) -> list[Change]:
    """Remote GGUF files that hubbot would not publish now: ones that left the ladder or were re-sharded."""
    names = {f.name for f in local} | keep
    out = []
    for name, r in sorted(remote.files.items()):
        if name in names or not name.endswith(".gguf"):
            continue
        if in_ladder(cfg, name) and not _superseded(name, names):
            continue
        out.append(Change("delete", name, r.size))
    return out


def _superseded(name: str, names: set[str]) -> bool:
    """True when ``name`` is a ladder file that is now published in another form (whole vs shards)."""
    from hubbot.gguf_io.info import SHARD_RE

    stem = (m.group("stem") if (m := SHARD_RE.match(name)) else name.removesuffix(".gguf"))
    return any(n != name and (n == f"{stem}.gguf" or (SHARD_RE.match(n) and SHARD_RE.match(n).group("stem") == stem))
               for n in names)


# --- commits ---------------------------------------------------------------------------------

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


def _commit(ctx: PushContext, local: list[LocalFile], deletes: list[str], message: str, description: str,
            revision: str, create_pr: bool, pbar) -> Any:
    """One commit of ``local`` additions and ``deletes``, retried without ever committing twice.

    Returns the CommitInfo, or None when a retry found everything already in place.
    """
    from huggingface_hub import CommitOperationDelete

    state: dict[str, Any] = {"remote": read_remote(ctx, revision), "prs": _pr_refs(ctx) if create_pr else set()}
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
            for ref in _pr_refs(ctx) - state["prs"]:
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


def _pr_refs(ctx: PushContext) -> set[str]:
    with ctx.hub("listing pull requests"):
        refs = with_retries(lambda: ctx.api.list_repo_refs(ctx.repo, include_pull_requests=True), "listing refs")
    return {r.ref for r in (refs.pull_requests or [])}


def _message(changes: list[Change], deletes: list[str], what: str) -> tuple[str, str]:
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


# --- the push --------------------------------------------------------------------------------

def desired_gating(cfg: Config, api: Any) -> Any:
    """'auto', 'manual', False, or None (leave the repo's setting alone) for this config."""
    gated = cfg.target.gated
    if gated != "inherit":
        return gated
    upstream = cfg.source.upstream_repo
    if upstream:
        value = remote_gated(api, upstream)
        if value:
            return value
    card = _upstream_card_meta(cfg)
    if any(k.startswith("extra_gated") for k in card):
        return "auto"
    return None


def _upstream_card_meta(cfg: Config) -> dict:
    import yaml

    if not cfg.source.card:
        return {}
    path = cfg.resolve_path(cfg.source.card)
    with contextlib.suppress(OSError, yaml.YAMLError):
        text = path.read_text(encoding="utf-8")
        if text.startswith("---"):
            data = yaml.safe_load(text.split("---", 2)[1])
            return data if isinstance(data, dict) else {}
    return {}


def push(cfg: Config, files: list[LocalFile], make_card: Callable[[list[str]], list[LocalFile]] | None = None, *,
         dry_run: bool = False, create_pr: bool = False, revision: str | None = None, tag: str | None = None,
         prune: bool = False, endpoint: str | None = None, token: str | None = None) -> dict[str, Any]:
    """Push ``files``, then the card ``make_card(final ladder file names)`` writes, to ``target.repo``.

    Returns the summary: repo, endpoint, revision, created_repo/branch, gating, added, updated,
    unchanged, deleted (names), bytes sent, commits (URLs), commit_url, pr_url, tag, changes.
    """
    from huggingface_hub.utils import disable_progress_bars

    if create_pr and revision:
        raise HubError("--create-pr opens a pull request against main; use it without --revision")
    if create_pr and tag:
        raise HubError("--tag marks a commit on a branch; tag after the pull request is merged, not with --create-pr")
    api = make_api(cfg, endpoint=endpoint, token=token)
    ctx = PushContext(cfg, api, cfg.target.repo, api.endpoint, revision or "main", create_pr)
    disable_progress_bars()  # hubbot shows its own byte bar
    summary: dict[str, Any] = {"repo": ctx.repo, "endpoint": ctx.endpoint, "revision": ctx.revision,
                               "dry_run": dry_run, "created_repo": False, "created_branch": False, "gating": None,
                               "added": [], "updated": [], "unchanged": [], "deleted": [], "bytes": 0,
                               "upload_bytes_planned": 0, "commits": [], "commit_url": None, "pr_url": None, "tag": None}
    remote = read_remote(ctx, "main")
    if not remote.exists:
        summary["created_repo"] = True
        if not dry_run:
            with ctx.hub("creating the repo"):
                with_retries(lambda: api.create_repo(ctx.repo, private=cfg.target.private, exist_ok=True),
                             "creating the repo")
        remote = RemoteState(exists=True)
    if revision and revision != "main":
        branch = read_remote(ctx, revision)
        if branch.head is None:
            summary["created_branch"] = True
            if not dry_run:
                with ctx.hub(f"creating branch {revision}"):
                    with_retries(lambda: api.create_branch(ctx.repo, branch=revision, exist_ok=True),
                                 f"creating branch {revision}")
            branch = RemoteState(exists=True, head=remote.head, files=remote.files)
        remote = branch if branch.head else remote
    gating = desired_gating(cfg, api)
    if gating is not None and (remote_gated(api, ctx.repo) or False) != gating:
        summary["gating"] = gating
        if not dry_run:
            with ctx.hub("changing the gating setting"):
                with_retries(lambda: api.update_repo_settings(ctx.repo, gated=gating), "changing the gating setting")

    changes = diff(files, remote)
    candidates = [c.name for c in prune_candidates(cfg, files, remote, set())]
    deletes = candidates if prune else []
    final = sorted({f.name for f in files} | {n for n in remote.files if in_ladder(cfg, n)} - set(deletes))
    card = make_card(final) if make_card is not None else []
    card_changes = diff(card, remote)
    summary["changes"] = [_change_dict(c) for c in changes + card_changes]
    summary["would_delete"] = deletes
    summary["not_pruned"] = [] if prune else candidates
    for c in changes + card_changes:
        summary[{"add": "added", "update": "updated", "unchanged": "unchanged"}[c.action]].append(c.name)
    to_send = [c for c in changes + card_changes if c.action in ("add", "update")]
    summary["upload_bytes_planned"] = sum(c.size for c in to_send)
    if dry_run:
        summary["deleted"] = deletes
        return summary

    file_changes = [c for c in changes if c.action != "unchanged"]
    with bar(summary["upload_bytes_planned"] or None, "upload", unit="B") as pbar:
        target_rev = ctx.revision
        if file_changes:
            title, desc = _message(changes, [], "update files")
            info = _commit(ctx, [c.local for c in file_changes if c.local], [], title, desc, target_rev, create_pr, pbar)
            target_rev = _record(summary, info, target_rev)
        card_todo = [c for c in card_changes if c.action != "unchanged"]
        if card_todo or deletes:
            title, desc = _message(card_changes, deletes, "update the model card")
            pr_now = create_pr and target_rev == ctx.revision  # no PR opened by the files commit
            info = _commit(ctx, [c.local for c in card_todo if c.local], deletes, title, desc, target_rev, pr_now, pbar)
            _record(summary, info, target_rev)
    summary["deleted"] = deletes
    summary["bytes"] = sum(ctx.uploaded.values())
    if tag:
        _tag(ctx, tag, summary)
    return summary


def _record(summary: dict, info: Any, target_rev: str) -> str:
    """Note a commit in the summary; the revision the next commit goes to (the PR's ref once one is open)."""
    if info is None:
        return target_rev
    if isinstance(info, dict):  # a lost answer whose PR was found
        return info["pr_revision"]
    summary["commits"].append(info.commit_url)
    summary["commit_url"] = info.commit_url
    if info.pr_url:
        summary["pr_url"] = info.pr_url
        return info.pr_revision or target_rev
    return target_rev


def _tag(ctx: PushContext, tag: str, summary: dict) -> None:
    from huggingface_hub import errors as hf

    head = read_remote(ctx).head
    with ctx.hub(f"creating tag {tag}"):
        refs = with_retries(lambda: ctx.api.list_repo_refs(ctx.repo), "listing tags")
        existing = {t.name: t.target_commit for t in refs.tags}
        if existing.get(tag) == head:
            summary["tag"] = tag
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
    summary["tag"] = tag


def _change_dict(c: Change) -> dict:
    return {"action": c.action, "file": c.name, "size": c.size, "sha256": c.local.sha256 if c.local else None}


def repo_endpoint(cfg: Config, endpoint: str | None = None) -> str:
    return hub_endpoint(cfg, endpoint)


# --- the whole pipeline ----------------------------------------------------------------------

def card_files(cfg: Config, work: WorkDir, names: list[str]) -> list[LocalFile]:
    """Render the card for the ladder files ``names`` into ``out/``; README.md plus any assets it writes."""
    try:
        from hubbot.card import render as card_mod
    except ImportError:
        card_mod = None
    if card_mod is not None and hasattr(card_mod, "write_card"):
        written = card_mod.write_card(cfg, files=names)
        paths = [Path(p) for p in (written if isinstance(written, (list, tuple)) else [written])]
    else:
        log.warning("hubbot.card is not available; publishing a minimal model card")
        paths = [_minimal_card(cfg, work, names)]
    out = []
    for p in paths:
        p = Path(getattr(p, "path", p))
        try:
            name = p.resolve().relative_to(work.out.resolve()).as_posix()
        except ValueError:
            name = p.name
        if p.name == CARD_NAME:
            name = CARD_NAME
        data = p.read_bytes()
        import hashlib

        out.append(LocalFile(name, p, len(data), hashlib.sha256(data).hexdigest(), "card"))
    # The card goes last within its commit too (assets first), matching the card-last rule.
    return sorted(out, key=lambda f: f.name == CARD_NAME)


def _minimal_card(cfg: Config, work: WorkDir, names: list[str]) -> Path:
    """A stand-in card (metadata and the file list) used only when hubbot.card is not installed."""
    import jinja2
    import yaml

    meta = {"base_model": cfg.source.upstream_repo, "base_model_relation": "quantized" if cfg.source.upstream_repo else None,
            "library_name": "gguf", "tags": ["gguf", *cfg.card.tags]}
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(
        "---\n{{ meta }}---\n\n# {{ title }}\n\nGGUF files published by hubbot.\n\n"
        "| file |\n|---|\n{% for n in names %}| {{ n }} |\n{% endfor %}")
    text = template.render(meta=yaml.safe_dump({k: v for k, v in meta.items() if v is not None}, sort_keys=False),
                           title=cfg.card.title or f"{cfg.model_name} GGUF", names=names)
    from hubbot.workdir import write_text_atomic

    path = work.out / CARD_NAME
    write_text_atomic(path, text)
    return path


def publish_project(cfg: Config, *, only: Iterable[str] | None = None, skip_bench: bool = False,
                    threads: int | None = None, **push_options: Any) -> dict[str, Any]:
    """Build (with the imatrix), benchmark, render the card and push; returns ``push``'s summary.

    ``push_options`` are ``push``'s keywords (dry_run, create_pr, revision, tag, prune, endpoint,
    token). Local stages run in a dry run as well (they write nothing to the Hub), so the dry run
    can report exact sizes and hashes.
    """
    from hubbot.build.run import build

    only = list(only or [])
    results = build(cfg, only=only or None, threads=threads)
    if not skip_bench:
        try:
            from hubbot.bench.run import run_bench
        except ImportError:
            log.warning("hubbot.bench is not available; publishing without benchmark results")
        else:
            run_bench(cfg, only=only or None, threads=threads)
    work = WorkDir(cfg.workdir).prepare()
    files = ladder_files(cfg, work, only)
    summary = push(cfg, files, lambda names: card_files(cfg, work, names), **push_options)
    summary["built"] = [r.file for r in results if r.status == "built"]
    return summary
