"""The words of every Hub failure hubbot explains: one line each, saying what went wrong and what to do.

``hubbot.hub.client.hub_error`` classifies the failure (``kind``: gated, revision, repo, file,
unreachable, lost, status, ...) and picks the wording: fetching the source or publishing to the
target. No text here ever includes the token (the caller redacts as a last line of defence).
"""

from __future__ import annotations


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def source_message(exc: BaseException, kind: str, status: int | None, has_token: bool, repo: str, where: str,
                   revision: str | None, filename: str | None, why: str) -> str:
    """The line for a failure while fetching source repo ``repo`` (``kind`` as ``hub.client`` classifies it)."""
    if kind == "invalid-id":
        return f"source repo id {repo!r} is not valid: write it as 'owner/name'"
    if kind == "gated":
        if not has_token:
            return (f"source repo {repo} is gated and no Hub token is set: accept its conditions at {where}/{repo} "
                    "and set HF_TOKEN (or run `hf auth login`) with a token of that account")
        return (f"source repo {repo} is gated and your token's account has no access yet: accept the conditions at "
                f"{where}/{repo} (or wait for the authors to approve the request), then retry")
    if kind == "revision":
        return (f"revision {revision!r} not found in source repo {repo}: use a branch, tag or commit sha that exists "
                "there, or remove source.revision to use main")
    if kind == "repo":
        if not has_token:
            return (f"source repo {repo} not found: check source.repo; if the repo is private, set HF_TOKEN "
                    "(or run `hf auth login`) with a token that can read it")
        return (f"source repo {repo} not found or your token cannot read it: check source.repo and that the token's "
                "account has access")
    if kind == "unreachable":
        return (f"cannot reach the Hub at {where} ({why}) to fetch {repo}: check HF_ENDPOINT (or target.endpoint) and "
                "the network; already downloaded sources work offline when pinned to a commit sha")
    if kind == "file":
        what = f"file {filename!r}" if filename else "a listed file"
        return (f"{what} not found in source repo {repo} at {revision}: check source.file, or retry if the repo was "
                "just changed")
    if status == 401:
        return "the Hub rejected the token (401): check HF_TOKEN or log in again with `hf auth login`"
    if status == 403:
        return f"your token may not read source repo {repo} (403): use a token with read access"
    if status == 429:
        return "the Hub is rate-limiting requests (429): wait a few minutes and retry"
    if status is not None:
        return f"the Hub failed while fetching {repo} ({status}: {_first_line(exc)}); retry later"
    if kind == "lost":
        return (f"lost the connection to {where} while fetching {repo} ({why}): check the network, then rerun; "
                "finished downloads are kept")
    return f"fetching source repo {repo} failed: {type(exc).__name__}: {exc}"


def target_message(exc: BaseException, kind: str, status: int | None, has_token: bool, repo: str, action: str,
                   where: str, revision: str | None, why: str) -> str:
    """The line for a failure while ``action`` on target repo ``repo``."""
    owner = repo.split("/")[0]
    if kind == "gated":
        return (f"{repo} is gated and your account has no access (while {action}): request access at {where}/{repo} "
                "and wait for approval, or use a token of an account that has it")
    if kind == "revision":
        return f"revision {revision!r} not found in {repo} (while {action}): use an existing branch, or omit --revision"
    if kind == "repo" and status != 401:
        return (f"repo {repo} not found at {where} or your token cannot see it (while {action}): check target.repo, "
                f"and that the token's account owns or can write to {owner!r}")
    if status == 401:
        if has_token:
            return (f"the Hub at {where} rejected the token (401) while {action}: set HF_TOKEN to a valid token or "
                    "run `hf auth login`")
        return (f"no Hub token is set and {where} needs one (401) for {action}: set HF_TOKEN or run `hf auth login` "
                "with a token that has write access")
    if status == 403:
        return (f"your token may not write to {repo} (403) while {action}: use a token with write access to "
                f"{owner!r} (a 'write' token, or a fine-grained one with write permission on that repo)")
    if status == 412:
        return f"{repo} changed while hubbot was {action} (412): rerun to publish on top of the new state"
    if status == 429:
        return (f"the Hub kept rate-limiting requests (429) while {action}: wait a few minutes and rerun; "
                "uploaded files are kept and the run resumes")
    if status is not None and status >= 500:
        return (f"the Hub failed (HTTP {status}) while {action}, also after retries: rerun later; uploaded files are "
                "kept and the run resumes")
    if kind == "unreachable":
        return (f"cannot reach the Hub at {where} ({why}) while {action}: check HF_ENDPOINT (or target.endpoint) and "
                "that the Hub there is up, then rerun")
    if kind == "lost":
        return (f"lost the connection to {where} while {action} ({why}), also after retries: check the network, "
                "then rerun to resume")
    if status is not None:
        return f"the Hub refused {action} on {repo} (HTTP {status}: {_first_line(exc)})"
    return f"{action} on {repo} failed: {type(exc).__name__}: {exc}"
