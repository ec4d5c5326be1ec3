"""The push: only what changed, files first, the card last.

In order:

1. read the remote state (head commit, tree with each file's LFS sha256, gating) — no local file
   is opened for this diff; unchanged files are recognised by the manifest's sha256;
2. plan everything (the card is rendered for the final file list) before the first write;
3. create the repo when missing (``target.private``), a missing ``--revision`` branch from main,
   and apply gating when the config or the upstream asks for it and the repo differs;
4. commit 1 — every new or changed ladder file, in one commit whose message lists them;
5. commit 2 — README.md (and any card assets) together with the ``--prune`` deletions.

Why this order keeps the card honest: after commit 1 the old card still names only files that
exist (updated files keep their names; new ones are simply not listed yet); commit 2 switches the
card and removes the files it no longer names in one atomic step. An unchanged publish makes no
commit and uploads nothing. How each commit survives retries is in ``hubbot.hub.commit``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubbot.config import Config
from hubbot.errors import HubError
from hubbot.hub.client import make_api, remote_gated, with_retries
from hubbot.hub.commit import commit, commit_message, tag_head
from hubbot.hub.local import LocalFile, ladder_stems
from hubbot.hub.remote import PushContext, RemoteState, diff, in_ladder, prune_candidates, read_remote
from hubbot.hub.summary import PublishPlan, PublishSummary
from hubbot.manifest import ManifestEntry
from hubbot.progress import bar

log = logging.getLogger(__name__)

# Renders the card for the final list of ladder file names; the card files to publish.
CardMaker = Callable[[list[str]], list[LocalFile]]


@dataclass(frozen=True)
class PushTarget:
    """What a push needs of the project: the repo and its settings, the gate the upstream asks for, the ladder."""

    repo: str
    private: bool = False
    gated: Any = "inherit"  # target.gated: 'auto', 'manual', a bool, or 'inherit'
    endpoint: str | None = None  # target.endpoint (an explicit endpoint and HF_ENDPOINT come first)
    upstream_repo: str | None = None  # whose Hub gate 'inherit' copies
    upstream_card_gated: bool = False  # the upstream card has extra_gated_* keys
    ladder_stems: frozenset[str] = frozenset()  # file-name stems of every variant (what --prune keeps)

    @classmethod
    def from_config(cls, cfg: Config, upstream_card_gated: bool = False) -> PushTarget:
        t = cfg.target
        return cls(repo=t.repo, private=t.private, gated=t.gated, endpoint=t.endpoint,
                   upstream_repo=cfg.source.upstream_repo, upstream_card_gated=upstream_card_gated,
                   ladder_stems=ladder_stems(cfg))


@dataclass(frozen=True)
class PushOptions:
    """How to push: the command line's choices."""

    dry_run: bool = False
    create_pr: bool = False
    revision: str | None = None
    tag: str | None = None
    prune: bool = False
    endpoint: str | None = None  # an explicit endpoint (--local-hub)
    token: str | None = None

    def check(self) -> None:
        """HubError for combinations and names the Hub would refuse; run before any work."""
        if self.create_pr and self.revision:
            raise HubError("--create-pr opens a pull request against main; use it without --revision")
        if self.create_pr and self.tag:
            raise HubError("--tag marks a commit on a branch; tag after the pull request is merged, not with --create-pr")
        if self.revision is not None:
            check_ref_name(self.revision, "--revision", "branch")
        if self.tag is not None:
            check_ref_name(self.tag, "--tag", "tag")


_REF_RULES = (
    (re.compile(r"[\x00-\x20\x7f]"), "a space or control character"),
    (re.compile(r"[~^:?*\[\\]"), "one of ~ ^ : ? * [ \\"),
    (re.compile(r"\.\."), "'..'"),
    (re.compile(r"@\{"), "'@{'"),
    (re.compile(r"//|^/|/$"), "an empty path part ('//' or a leading or trailing '/')"),
    (re.compile(r"(^|/)\."), "a part starting with '.'"),
    (re.compile(r"\.lock(/|$)"), "a part ending in '.lock'"),
    (re.compile(r"\.$"), "a trailing '.'"),
)


def check_ref_name(name: str, option: str, what: str) -> None:
    """HubError unless ``name`` is a valid git ref name (git check-ref-format), as the Hub requires."""
    if not name or name == "@":
        raise HubError(f"{option} {name!r} is not a valid {what} name: give a name such as v1 or dev")
    for pattern, problem in _REF_RULES:
        if pattern.search(name):
            raise HubError(f"{option} {name!r} is not a valid {what} name (it contains {problem}): "
                           "use letters, digits, '-', '_', '.' and '/'")


def desired_gating(target: PushTarget, api: Any) -> Any:
    """'auto', 'manual', False, or None (leave the repo's setting alone) for this target."""
    if target.gated != "inherit":
        return target.gated
    if target.upstream_repo:
        value = remote_gated(api, target.upstream_repo)
        if value:
            return value
    return "auto" if target.upstream_card_gated else None


def push(target: PushTarget, files: list[LocalFile], make_card: CardMaker | None,
         options: PushOptions = PushOptions()) -> PublishSummary:
    """Push ``files``, then the card ``make_card(final ladder file names)`` writes, to ``target.repo``."""
    from huggingface_hub.utils import disable_progress_bars

    options.check()
    api = make_api(target, endpoint=options.endpoint, token=options.token)
    ctx = PushContext(api, target.repo, api.endpoint, options.revision or "main", options.create_pr)
    disable_progress_bars()  # hubbot shows its own byte bar
    plan = plan_push(ctx, target, files, make_card, options)
    summary = PublishSummary(plan, options.dry_run, create_pr=options.create_pr,
                             tag_planned=options.tag if options.dry_run else None)
    if options.dry_run:
        return summary
    _prepare_repo(ctx, target, plan)
    _commit_plan(ctx, plan, summary)
    if options.tag:
        tag_head(ctx, options.tag)
        summary.tag = options.tag
    return summary


def plan_push(ctx: PushContext, target: PushTarget, files: list[LocalFile], make_card: CardMaker | None,
              options: PushOptions) -> PublishPlan:
    """Read the remote and work out every change (the card rendered for the final file list); writes nothing."""
    plan = PublishPlan(ctx.repo, ctx.endpoint, ctx.revision, private=target.private)
    main = read_remote(ctx, "main")
    plan.created_repo = not main.exists
    remote = main if main.exists else RemoteState(exists=True)
    if options.revision and options.revision != "main":
        branch = read_remote(ctx, options.revision)
        plan.created_branch = branch.head is None
        if branch.head is not None:
            remote = branch
    gating = desired_gating(target, ctx.api)
    if gating is not None and (remote_gated(ctx.api, ctx.repo) or False) != gating:
        plan.gating = gating
    plan.files = diff(files, remote)
    candidates = [c.name for c in prune_candidates(target.ladder_stems, files, remote, set())]
    plan.deletes = candidates if options.prune else []
    plan.not_pruned = [] if options.prune else candidates
    final = sorted({f.name for f in files} | {n for n in remote.files if in_ladder(target.ladder_stems, n)}
                   - set(plan.deletes))
    plan.card = diff(make_card(final), remote) if make_card is not None else []
    return plan


def _prepare_repo(ctx: PushContext, target: PushTarget, plan: PublishPlan) -> None:
    """Create the repo and the branch when missing and set the gate, as planned."""
    api = ctx.api
    if plan.created_repo:
        with ctx.hub("creating the repo"):
            with_retries(lambda: api.create_repo(ctx.repo, private=target.private, exist_ok=True), "creating the repo")
    if plan.created_branch:
        with ctx.hub(f"creating branch {ctx.revision}"):
            with_retries(lambda: api.create_branch(ctx.repo, branch=ctx.revision, exist_ok=True),
                         f"creating branch {ctx.revision}")
    if plan.gating is not None:
        with ctx.hub("changing the gating setting"):
            with_retries(lambda: api.update_repo_settings(ctx.repo, gated=plan.gating), "changing the gating setting")


def _commit_plan(ctx: PushContext, plan: PublishPlan, summary: PublishSummary) -> None:
    """The files commit, then the card commit (with the deletions), each only when it changes something."""
    file_todo = [c for c in plan.files if c.action != "unchanged"]
    card_todo = [c for c in plan.card if c.action != "unchanged"]
    with bar(plan.upload_bytes or None, "upload", unit="B") as pbar:
        target_rev = ctx.revision
        if file_todo:
            title, desc = commit_message(plan.files, [], "update files")
            info = commit(ctx, [c.local for c in file_todo if c.local], [], title, desc, target_rev, ctx.create_pr,
                          pbar)
            target_rev = _record(summary, info, target_rev)
        if card_todo or plan.deletes:
            title, desc = commit_message(plan.card, plan.deletes, "update the model card")
            pr_now = ctx.create_pr and target_rev == ctx.revision  # no PR opened by the files commit
            info = commit(ctx, [c.local for c in card_todo if c.local], plan.deletes, title, desc, target_rev, pr_now,
                          pbar)
            _record(summary, info, target_rev)
    summary.bytes_sent = sum(ctx.uploaded.values())


def _record(summary: PublishSummary, info: Any, target_rev: str) -> str:
    """Note a commit in the summary; the revision the next commit goes to (the PR's ref once one is open)."""
    if info is None:
        return target_rev
    if isinstance(info, dict):  # a lost answer whose PR was found
        return info["pr_revision"]
    summary.commits.append(info.commit_url)
    summary.commit_url = info.commit_url
    if info.pr_url:
        summary.pr_url = info.pr_url
        return info.pr_revision or target_rev
    return target_rev


def files_on_hub(target: PushTarget, entries: dict[str, ManifestEntry], out: Path, options: PushOptions) -> list[LocalFile]:
    """The manifest ``entries`` the Hub lists with the size and sha256 recorded (the card job's files).

    Entries the Hub does not have as built are logged and left out; HubError when none is there.
    """
    api = make_api(target, endpoint=options.endpoint, token=options.token)
    ctx = PushContext(api, target.repo, api.endpoint, options.revision or "main", False)
    remote = read_remote(ctx)
    where = f"{target.repo} ({ctx.revision}) at {ctx.endpoint}"
    if not remote.exists or remote.head is None:
        raise HubError(f"--card-only: {where} does not exist yet, so there is no file for the card to name; publish "
                       "the files first (the build jobs' `hubbot publish --no-card`, or a plain `hubbot publish`)")
    files: list[LocalFile] = []
    for name, entry in entries.items():
        r = remote.files.get(name)
        if r is not None and entry.sha256 and entry.size is not None and (r.sha256, r.size) == (entry.sha256, entry.size):
            role = "imatrix" if entry.is_imatrix else "variant"
            files.append(LocalFile(name, out / name, entry.size, entry.sha256, role))
        else:
            log.warning("%s is not on %s as built (its job failed or did not upload); the card leaves it out",
                        name, target.repo)
    if not any(f.role != "imatrix" for f in files):
        raise HubError(f"--card-only: none of the {len(entries)} merged files is on {where} as built; check that the "
                       "build jobs' `hubbot publish --no-card` succeeded, then rerun the card job")
    return files
