"""The whole release, stage after stage: build → bench → card → push.

``publish_project`` is ``hubbot publish``; a job matrix splits it in two halves (see
``hubbot.hub.release``): ``publish_files`` is a build job's upload (its variants' files, no card)
and ``publish_card`` the card job's (README.md naming only files the Hub already lists).

Each stage hands the next what it needs: the build writes the files and the manifest, the bench
its results, the upstream card is loaded once here and drives both the card's front matter and
the repo's gate, and the push gets the target's settings, the files and a card callback.
Option, name, endpoint and token checks run first, before anything is built.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from hubbot.bench.run import run_bench
from hubbot.build.run import build
from hubbot.card.render import write_card
from hubbot.card.upstream import UpstreamCard, load_upstream
from hubbot.config import Config
from hubbot.errors import HubError
from hubbot.hub.client import hub_endpoint
from hubbot.hub.local import LocalFile, card_files, ladder_files
from hubbot.hub.push import CardMaker, PushOptions, PushTarget, files_on_hub, push
from hubbot.hub.release import MergeError
from hubbot.hub.summary import PublishSummary
from hubbot.hub.token import hub_token
from hubbot.workdir import WorkDir

log = logging.getLogger(__name__)


def check_push(cfg: Config, options: PushOptions) -> None:
    """The checks that need no network: options, branch and tag names, the endpoint's and the token's form."""
    options.check()
    hub_endpoint(cfg, options.endpoint)
    if options.token is None:
        hub_token()


def _target(cfg: Config, upstream: UpstreamCard | None) -> PushTarget:
    return PushTarget.from_config(cfg, upstream_card_gated=bool(upstream and upstream.gated))


def _card_maker(cfg: Config, work: WorkDir, upstream: UpstreamCard | None) -> CardMaker:
    """Render the card for the final ladder file names into out/; README.md plus the assets it writes."""
    def make(names: list[str]) -> list[LocalFile]:
        written = write_card(cfg, files=names, upstream=upstream)
        return card_files(written, work.out)

    return make


def _build_and_bench(cfg: Config, only: list[str] | None, skip_bench: bool, threads: int | None) -> list[str]:
    """Build (with the imatrix) and measure the selected variants; the files built anew."""
    results = build(cfg, only=only, threads=threads)
    if not skip_bench:
        run_bench(cfg, only=only, threads=threads)
    return [r.file for r in results if r.status == "built"]


def publish_project(cfg: Config, *, only: Iterable[str] | None = None, skip_bench: bool = False,
                    threads: int | None = None, options: PushOptions = PushOptions()) -> PublishSummary:
    """Build, benchmark, render the card and push; the push's PublishSummary.

    Local stages run in a dry run as well (they write nothing to the Hub), so the dry run can
    report exact sizes and hashes.
    """
    check_push(cfg, options)
    selected = list(only or []) or None
    built = _build_and_bench(cfg, selected, skip_bench, threads)
    work = WorkDir(cfg.workdir).prepare()
    upstream = load_upstream(cfg)  # after the build: a Hub source's README is fetched by it
    summary = push(_target(cfg, upstream), ladder_files(cfg, work, selected), _card_maker(cfg, work, upstream), options)
    summary.built = built
    return summary


def publish_files(cfg: Config, only: Sequence[str], *, skip_bench: bool = False, threads: int | None = None,
                  options: PushOptions = PushOptions()) -> PublishSummary:
    """A matrix job's upload: build and bench ``only`` (skipping what is up to date), then push their
    files (and the imatrix) without README.md, which the card job pushes once every job is done."""
    if not only:
        raise MergeError("a files-only publish needs --only NAME: the variants this job built")
    check_push(cfg, options)
    built = _build_and_bench(cfg, list(only), skip_bench, threads)
    work = WorkDir(cfg.workdir).prepare()
    # The gate is decided as the card job decides it, so the two halves never flip it.
    upstream = load_upstream(cfg)
    summary = push(_target(cfg, upstream), ladder_files(cfg, work, list(only)), None, options)
    summary.built = built
    return summary


def publish_card(cfg: Config, options: PushOptions = PushOptions()) -> PublishSummary:
    """Render the card from the merged results and push README.md (the card job's upload).

    Only files the remote lists with the sha256 the jobs recorded count as published: a variant
    whose job failed before its upload is left out of the card (and logged), never named.
    """
    check_push(cfg, options)
    work = WorkDir(cfg.workdir).prepare()
    entries = work.manifest.entries
    if not entries:
        raise HubError(f"--card-only: {work.root} holds no built or merged files; run `hubbot merge` with the build "
                       "jobs' result folders first")
    upstream = load_upstream(cfg)
    target = _target(cfg, upstream)
    files = files_on_hub(target, entries, work.out, options)
    summary = push(target, files, _card_maker(cfg, work, upstream), options)
    summary.published = sorted(f.name for f in files)
    return summary
