"""What a push plans and what it did: the values ``hubbot publish`` prints and ``--json`` writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hubbot.hub.remote import Change


@dataclass
class PublishPlan:
    """What a push will do (a dry run: would do), worked out before anything is written."""

    repo: str
    endpoint: str
    revision: str
    private: bool = False
    created_repo: bool = False
    created_branch: bool = False
    gating: Any = None  # the gate to set ('auto', 'manual', False), None when the repo's setting stays
    files: list[Change] = field(default_factory=list)  # ladder files: the first commit
    card: list[Change] = field(default_factory=list)  # README.md and its assets: the last commit
    deletes: list[str] = field(default_factory=list)  # removed with the card (--prune)
    not_pruned: list[str] = field(default_factory=list)  # left the ladder, kept without --prune

    @property
    def changes(self) -> list[Change]:
        return self.files + self.card

    def named(self, action: str) -> list[str]:
        return [c.name for c in self.changes if c.action == action]

    @property
    def upload_bytes(self) -> int:
        return sum(c.size for c in self.changes if c.action in ("add", "update"))

    @property
    def commits(self) -> int:
        """Commits the push makes: one for changed ladder files, one for the card and the deletions."""
        files = any(c.action != "unchanged" for c in self.files)
        card = any(c.action != "unchanged" for c in self.card) or bool(self.deletes)
        return int(files) + int(card)


@dataclass
class PublishSummary:
    """A push's plan and outcome; ``to_json`` is what ``hubbot publish --json`` prints."""

    plan: PublishPlan
    dry_run: bool
    create_pr: bool = False
    tag_planned: str | None = None  # the tag a dry run would set
    commits: list[str] = field(default_factory=list)  # commit URLs, in order
    commit_url: str | None = None
    pr_url: str | None = None
    tag: str | None = None
    bytes_sent: int = 0
    built: list[str] | None = None  # files the build stage (re)built before the push
    published: list[str] | None = None  # --card-only: the files the card names
    local_hub: str | None = None  # --local-hub: the server's storage folder

    def to_json(self) -> dict[str, Any]:
        p = self.plan
        data = {
            "repo": p.repo, "endpoint": p.endpoint, "revision": p.revision, "dry_run": self.dry_run,
            "created_repo": p.created_repo, "created_branch": p.created_branch, "gating": p.gating,
            "added": p.named("add"), "updated": p.named("update"), "unchanged": p.named("unchanged"),
            "deleted": list(p.deletes), "would_delete": list(p.deletes), "not_pruned": list(p.not_pruned),
            "changes": [c.to_json() for c in p.changes], "upload_bytes_planned": p.upload_bytes,
            "bytes": self.bytes_sent, "commits": list(self.commits), "commit_url": self.commit_url,
            "pr_url": self.pr_url, "tag": self.tag, "create_pr": self.create_pr, "tag_planned": self.tag_planned,
        }
        for key in ("built", "published", "local_hub"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data
