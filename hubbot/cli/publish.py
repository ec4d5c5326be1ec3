"""``hubbot publish`` and ``hubbot serve-hub``: parsing and printing; the work is in hubbot.pipeline and testing/localhub/."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import click

from hubbot.cli.options import config_option, echo_json, json_option, load, only_option, run_safely, threads_option
from hubbot.hub.push import PushOptions
from hubbot.hub.summary import PublishSummary
from hubbot.workdir import human_bytes


def render_summary(s: PublishSummary) -> str:
    """The human summary of a publish (or the plan of a dry run)."""
    p = s.plan
    lines = []
    dry = s.dry_run
    where = f"{p.endpoint}/{p.repo}"
    if p.created_repo:
        lines.append(f"{'would create' if dry else 'created'} repo {p.repo} at {p.endpoint}"
                     + (" (private)" if p.private else ""))
    if p.created_branch:
        lines.append(f"{'would create' if dry else 'created'} branch {p.revision} from main")
    if p.gating is not None:
        lines.append(f"{'would set' if dry else 'set'} gating: {p.gating}")
    for c in p.changes:
        lines.append(f"  {c.action:9} {c.name}  {human_bytes(c.size)}")
    for name in p.deletes:
        lines.append(f"  {'delete':9} {name}")
    for name in p.not_pruned:
        lines.append(f"  {'kept':9} {name}  (left the ladder; --prune deletes it)")
    counts = (f"{len(p.named('add'))} added, {len(p.named('update'))} updated, {len(p.named('unchanged'))} unchanged, "
              f"{len(p.deletes)} deleted")
    if dry:
        lines.append(f"dry run: {counts}; would upload {human_bytes(p.upload_bytes)} in "
                     f"{p.commits} commit(s){' as a pull request' if s.create_pr else ''} to {where}"
                     + (f" and tag {s.tag_planned}" if s.tag_planned else "") + "; nothing was written")
        return "\n".join(lines)
    lines.append(f"{counts}; uploaded {human_bytes(s.bytes_sent)}")
    if s.pr_url:
        lines.append(f"pull request: {s.pr_url}")
    if s.commit_url:
        lines.append(f"commit: {s.commit_url}")
    else:
        lines.append(f"nothing changed: no commit made ({where})")
    if s.tag:
        lines.append(f"tag: {s.tag}")
    return "\n".join(lines)


@click.command()
@config_option
@only_option
@threads_option
@json_option
@click.option("--dry-run", is_flag=True, help="Show what would be created, uploaded, deleted and committed; write nothing to the Hub.")
@click.option("--create-pr", is_flag=True, help="Open a pull request against main instead of committing to it.")
@click.option("--revision", metavar="BRANCH", help="Commit to this branch (created from main when missing).")
@click.option("--tag", metavar="TAG", help="Tag the published commit (e.g. v1).")
@click.option("--prune", is_flag=True, help="Delete remote GGUF files that left the ladder (never done without it).")
@click.option("--local-hub", is_flag=True, help="Publish to a local Hub-compatible server under the work directory (offline demo).")
@click.option("--skip-bench", is_flag=True, help="Do not run the benchmarks before rendering the card.")
@click.option("--no-card", is_flag=True, help="Push the --only variants' files but not README.md (a job-matrix build job).")
@click.option("--card-only", is_flag=True, help="Build nothing; render the card from the (merged) results and push README.md, naming only files the Hub lists.")
@run_safely
def publish(config_path: Path, only: tuple[str, ...], threads: int | None, as_json: bool, dry_run: bool,
            create_pr: bool, revision: str | None, tag: str | None, prune: bool, local_hub: bool, skip_bench: bool,
            no_card: bool = False, card_only: bool = False) -> None:
    """Build, benchmark, render the card and push only what changed to target.repo.

    Token: HF_TOKEN or the stored `hf auth login`. Endpoint: HF_ENDPOINT or target.endpoint.
    """
    from hubbot import pipeline
    from hubbot.hub.release import check_split_options

    # Every flag check first: nothing is built for a command that cannot be carried out.
    if no_card or card_only:
        check_split_options(only, no_card, card_only, create_pr, prune, tag)
    options = PushOptions(dry_run=dry_run, create_pr=create_pr, revision=revision, tag=tag, prune=prune)
    options.check()
    cfg = load(config_path)
    with contextlib.ExitStack() as stack:
        storage = None
        if local_hub:
            from hubbot.testing.localhub import LocalHub

            storage = cfg.workdir / "localhub"
            hub = stack.enter_context(LocalHub(storage))
            options = dataclasses.replace(options, endpoint=hub.endpoint)
        if card_only:
            # The job-matrix halves of a publish (see hubbot/hub/release.py and .github/workflows/release.yml).
            summary = pipeline.publish_card(cfg, options)
        elif no_card:
            summary = pipeline.publish_files(cfg, only, skip_bench=skip_bench, threads=threads, options=options)
        else:
            summary = pipeline.publish_project(cfg, only=only, skip_bench=skip_bench, threads=threads, options=options)
        if storage is not None:
            summary.local_hub = str(storage)
    if as_json:
        echo_json(summary.to_json())
        return
    click.echo(render_summary(summary))
    if storage is not None:
        click.echo(f"local hub: repo data under {storage}/repos/{cfg.target.repo} (LFS objects in {storage}/lfs); "
                   f"serve it with `hubbot serve-hub --storage {storage}`")


@click.command("serve-hub")
@click.option("--port", type=click.IntRange(0, 65535), default=8089, show_default=True, help="Port on 127.0.0.1 (0: any free port).")
@click.option("--storage", type=click.Path(file_okay=False, path_type=Path), default=Path(".hubbot/localhub"),
              show_default=True, help="Folder holding the repos.")
@click.option("--tokens", "tokens_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help='JSON file {"<token>": {"user": "alice", "write": true}}; without it every request is allowed.')
@run_safely
def serve_hub(port: int, storage: Path, tokens_file: Path | None) -> None:
    """Run the local Hub-compatible server on 127.0.0.1 until interrupted (point HF_ENDPOINT at it)."""
    from hubbot.testing.localhub import LocalHub, load_tokens

    tokens = load_tokens(tokens_file) if tokens_file else {}
    hub = LocalHub(storage, port=port, tokens=tokens)
    click.echo(f"local hub at {hub.endpoint} storing under {hub.storage}; export HF_ENDPOINT={hub.endpoint}", err=True)
    try:
        hub.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.close()
