"""The source staged once for a release: pushed by the convert job, fetched by every later job.

``stage_push`` (the convert job) resolves the source (downloads and converts it when it is a Hub
safetensors repo), builds the ladder's float variant in the source's dtype (``bf16``) and pushes
it to the target repo without a card, then writes ``staged.json``::

    {"version": 1, "repo", "revision": <commit sha>, "branch": <branch or null>,
     "variant": <name or null>, "files": [{"name", "size", "sha256"}],
     "source": {"sha256", "repo", "revision", "origin"}, "entry": <the variant's manifest entry>}

A ladder without a float variant in that dtype sends the resolved source file to the branch
``hubbot-staging`` instead (never to the branch the card describes).

``stage_fetch`` (every later job) downloads exactly those files at that commit (huggingface_hub
resumes a partial download), checks each sha256, records the file as this machine's source (see
``hubbot.source.staged``) and the float variant as built, so ``hubbot build``/``imatrix``/``bench``
neither convert nor build it again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from hubbot.card.upstream import cache_path
from hubbot.config import Config
from hubbot.config.sizes import parse_size
from hubbot.errors import HubbotError
from hubbot.hub.client import hub_errors, make_api
from hubbot.manifest import LOCAL_KEYS, ManifestEntry, Shard, Shards
from hubbot.source.staged import StagedSource, record_staged, source_key
from hubbot.workdir import WorkDir, sha256_file, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

STAGING_BRANCH = "hubbot-staging"
VERSION = 1


class StageError(HubbotError):
    """The staged source is missing, unreachable or not what the convert job staged."""


def staged_variant(cfg: Config):
    """The ladder's float variant in the source's dtype (the file every later job starts from), or None."""
    dtype = cfg.source.dtype.upper()
    return next((v for v in cfg.variants if v.type == dtype and not v.layers), None)


def _head(api, repo: str, revision: str) -> str:
    with hub_errors(repo, f"read the head of {revision}", api.endpoint, revision):
        sha = api.repo_info(repo, revision=revision).sha
    if not sha:
        raise StageError(f"the Hub did not report a commit for {repo}@{revision}; retry the convert job")
    return sha


def stage_push(cfg: Config, output: Path, threads: int | None = None) -> dict[str, Any]:
    """Build and push the staged float file; write and return ``staged.json``'s content."""
    from hubbot.pipeline import publish_files
    from hubbot.source.resolve import resolve_source

    work = WorkDir(cfg.workdir).prepare()
    api = make_api(cfg)
    repo = cfg.target.repo
    fv = staged_variant(cfg)
    if fv is not None:
        # Pushes the float variant (its shards when it is over target.max_shard_size), no card.
        publish_files(cfg, [fv.name], skip_bench=True, threads=threads)
        fname = cfg.file_name(fv)
        entry = work.manifest.get(fname)
        if entry is None or entry.source is None:
            raise StageError(f"{fname} was published but is not recorded in {work.root}; rerun the convert job")
        shards = entry.shard_files
        files = ([{"name": s.file, "size": s.size, "sha256": s.sha256} for s in shards] if shards
                 else [{"name": fname, "size": entry.size, "sha256": entry.sha256}])
        branch = None
        revision = _head(api, repo, "main")
        source = entry.source.to_json()
        # Not staged: this machine's stamp, build time and memory, and its shards (a fetching job
        # records the shards it downloads itself).
        staged_entry = entry.without(*LOCAL_KEYS, "shards").to_json()
    else:
        src = resolve_source(cfg, work.cache)
        # Its own name: the benchmark records the reference file by name, as a single machine does.
        name = src.path.name
        branch = STAGING_BRANCH
        with hub_errors(repo, f"stage the source on branch {branch}", api.endpoint, branch):
            api.create_repo(repo, private=cfg.target.private, exist_ok=True)
            api.create_branch(repo, branch=branch, exist_ok=True)
            info = api.upload_file(path_or_fileobj=str(src.path), path_in_repo=name, repo_id=repo, revision=branch,
                                   commit_message=f"hubbot: stage the source for a release ({src.sha256[:12]})")
        revision = info.oid or _head(api, repo, branch)
        files = [{"name": name, "size": src.path.stat().st_size, "sha256": src.sha256}]
        source = src.record().to_json()
        staged_entry = None
    upstream = cache_path(cfg)  # the source's card, fetched with the source: the later jobs resolve no source
    staged = {"version": VERSION, "repo": repo, "revision": revision, "branch": branch,
              "variant": fv.name if fv else None, "source_key": source_key(cfg), "files": files,
              "source": source, "entry": staged_entry,
              "upstream_card": upstream.read_text(encoding="utf-8") if upstream.is_file() else None}
    write_json_atomic(Path(output), staged)
    log.info("staged %s at %s@%s", ", ".join(f["name"] for f in files), repo, revision[:12])
    return staged


def read_staged(path: Path, job: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"job {job}: {path} is missing (the convert job's `plan` artifact carries staged.json); "
                         "rerun the convert job, or the whole release when it was a dry run, which stages nothing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION or not data["files"] or not data["revision"]:
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StageError(f"job {job}: {path} is not a staged.json written by `hubbot stage push`; "
                         "rerun the convert job") from None
    return data


def stage_fetch(cfg: Config, staged_path: Path, job: str) -> dict[str, Any]:
    """Download, verify and register the staged files; returns what was registered."""
    staged = read_staged(staged_path, job)
    repo, revision = staged["repo"], staged["revision"]
    if repo != cfg.target.repo or staged.get("source_key") != source_key(cfg):
        raise StageError(f"job {job}: {staged_path} was staged for {repo} from another source section than "
                         f"{cfg.path.name}'s; run every job of a release from the same config")
    work = WorkDir(cfg.workdir).prepare()
    try:
        entry = ManifestEntry.from_json(staged["entry"]) if staged.get("entry") else None
    except ValueError:
        raise StageError(f"job {job}: {staged_path} is not a staged.json written by `hubbot stage push`; "
                         "rerun the convert job") from None
    dest = work.out if entry else work.cache / "staged"
    api = make_api(cfg)
    # A float file over target.max_shard_size is staged as its shards (the 27B BF16 is two): each is
    # fetched and checked on its own; llama.cpp and hubbot open a split model from its first shard.
    paths = [_fetch_one(api, repo, revision, f, dest, job) for f in staged["files"]]
    path, got = paths[0]
    st = path.stat()
    if entry:
        # The float variant counts as built here: the same entry the convert job recorded, this copy's
        # stamp (a sharded one keeps the whole file's size: its shards are what this machine holds).
        if len(paths) == 1:
            entry = replace(entry, size=st.st_size, mtime_ns=st.st_mtime_ns)
        else:  # the shards this machine holds, recorded as a build that split the file records them
            shards = [Shard(file=p.name, sha256=sha, size=(ps := p.stat()).st_size, mtime_ns=ps.st_mtime_ns)
                      for p, sha in paths]
            limit = parse_size(cfg.target.max_shard_size) if cfg.target.max_shard_size else None
            entry = replace(entry, shards=Shards(source_sha256=entry.sha256, files=shards, max_size=limit))
        work.manifest.put(cfg.file_name(cfg.variant(staged["variant"])), entry)
    src = staged["source"]
    record = StagedSource(path=path.resolve(), size=st.st_size, sha256=src["sha256"], origin=src["origin"],
                          repo=src.get("repo"), revision=src.get("revision"), key=staged["source_key"])
    record_staged(work.cache, record)
    card = cache_path(cfg)
    if staged.get("upstream_card") and not card.is_file():
        card.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(card, staged["upstream_card"])
    if len(paths) == 1:  # its sha256 is known: the hash cache spares the next stage hashing 54 GB again
        _remember_hash(work.cache, path, got)
    names = ", ".join(f["name"] for f in staged["files"])
    log.info("job %s: staged %s fetched from %s@%s and verified", job, names, repo, revision[:12])
    return {"job": job, "repo": repo, "revision": revision, "file": str(path), "sha256": got,
            "files": [str(p) for p, _ in paths], "variant": staged.get("variant"), "source_sha256": src["sha256"]}


def _fetch_one(api, repo: str, revision: str, f: dict[str, Any], dest: Path, job: str) -> tuple[Path, str]:
    """Download one staged file at the pinned commit (resuming a partial one) and check its sha256."""
    from huggingface_hub import hf_hub_download

    from hubbot.hub.token import hub_token

    try:
        with hub_errors(repo, f"download the staged {f['name']}", api.endpoint, revision, filename=f["name"]):
            # local_dir keeps a partial download under dest/.cache and resumes it on a rerun.
            path = Path(hf_hub_download(repo, f["name"], revision=revision, local_dir=dest,
                                        endpoint=api.endpoint, token=hub_token()))
    except HubbotError as exc:
        raise StageError(f"job {job}: the staged source {repo}@{revision[:12]} cannot be fetched: {exc}; "
                         "rerun the convert job, which stages it again") from None
    got = sha256_file(path)
    if got != f["sha256"]:
        path.unlink(missing_ok=True)  # a rerun downloads it again; nothing on the Hub is touched
        raise StageError(f"job {job}: {f['name']} from {repo}@{revision[:12]} has sha256 {got}, staged.json "
                         f"says {f['sha256']}: rerun the convert job to stage the source again")
    return path, got


def _remember_hash(cache: Path, path: Path, sha: str) -> None:
    from hubbot.source.resolve import HashCache

    hashes = HashCache(cache / "hashes.json")
    st = path.stat()
    hashes.data[str(path.resolve())] = [st.st_size, st.st_mtime_ns, sha]
    write_json_atomic(hashes.path, hashes.data)
