"""What the target repo has published, read for a preview: its files and the card's records file.

Read-only, and the token is optional: a public repo is read without one (a pull request's
preview job has no secrets); a configured token is used for a private repo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hubbot.card.published import RECORDS_NAME, PublishedRecords, parse_records
from hubbot.config import Config
from hubbot.hub.client import make_api
from hubbot.hub.remote import PushContext, RemoteFile, read_remote

log = logging.getLogger(__name__)


@dataclass
class PublishedRepo:
    """The target repo at the head of main: its files and, when publish wrote one, the card's records."""

    repo: str
    endpoint: str
    token: str | None
    head: str | None = None  # None: the repo (or its main branch) does not exist
    files: dict[str, RemoteFile] = field(default_factory=dict)
    records: PublishedRecords | None = None

    @property
    def exists(self) -> bool:
        return self.head is not None


def read_published(cfg: Config) -> PublishedRepo:
    """The target repo's published state (nothing is written)."""
    from huggingface_hub import hf_hub_download

    from hubbot.source.fetch import hub_cache_dir

    api = make_api(cfg)
    ctx = PushContext(api, cfg.target.repo, api.endpoint, "main", False)
    remote = read_remote(ctx)
    state = PublishedRepo(cfg.target.repo, api.endpoint, api.token)
    if not remote.exists or remote.head is None:
        log.info("%s is not on %s (or not visible without a token): nothing is published yet", ctx.repo, ctx.endpoint)
        return state
    state.head, state.files = remote.head, remote.files
    if RECORDS_NAME in remote.files:
        with ctx.hub(f"downloading {RECORDS_NAME}"):
            path = hf_hub_download(ctx.repo, RECORDS_NAME, revision=remote.head, endpoint=api.endpoint,
                                   token=api.token, cache_dir=hub_cache_dir())
        state.records = parse_records(Path(path).read_text(encoding="utf-8"), f"{ctx.repo}/{RECORDS_NAME}")
    else:
        log.info("%s has no %s (published by an older hubbot?): its figures cannot be shown", ctx.repo, RECORDS_NAME)
    return state
