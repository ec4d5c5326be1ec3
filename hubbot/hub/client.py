"""The one place hubbot makes a Hub client, retries what the client does not, and explains failures.

* ``make_api`` is the single, patchable ``HfApi`` factory (token and endpoint resolved here);
* ``with_retries`` retries the calls ``huggingface_hub`` sends once (commit, create_repo, settings,
  tag, branch) on 408/429/5xx and dropped connections, honouring ``Retry-After`` and ``RateLimit``;
* ``hub_error`` / ``hub_errors`` turn client exceptions into one-line ``HubError``s saying what to do;
* ``download_file`` fetches one file pinned to the commit it resolved to.

The token is never logged, printed or put in a message: ``redact`` scrubs it from any text built
from a server response as a last line of defence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hubbot import __version__
from hubbot.errors import HubbotError, HubError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from hubbot.config import Config

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Attempts and the first backoff step (doubling, capped); tests shrink them.
RETRY_ATTEMPTS = 6
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
# Never wait longer than this for a rate-limit window, whatever the server says.
RATE_LIMIT_MAX_SECONDS = 600.0
sleep: Callable[[float], None] = time.sleep

T = TypeVar("T")


def hub_token() -> str | None:
    """The token to use: ``HF_TOKEN`` (or the legacy name), else the stored ``hf auth login``; never logged."""
    if tok := os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return tok.strip() or None
    # huggingface_hub reads HF_HOME at import; read it now so a changed environment is honoured.
    home = Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    path = Path(os.environ.get("HF_TOKEN_PATH") or home / "token").expanduser()
    with contextlib.suppress(OSError):
        return path.read_text().strip() or None
    return None


def hub_endpoint(cfg: Config | None = None, endpoint: str | None = None) -> str:
    """The Hub URL: an explicit ``endpoint``, else ``HF_ENDPOINT``, else ``target.endpoint``, else huggingface.co."""
    chosen = endpoint or os.environ.get("HF_ENDPOINT") or (cfg.target.endpoint if cfg is not None else None)
    return (chosen or DEFAULT_ENDPOINT).rstrip("/")


def make_api(cfg: Config | None = None, *, endpoint: str | None = None, token: str | None = None) -> HfApi:
    """An ``HfApi`` for ``endpoint`` (see ``hub_endpoint``) with ``token`` or the resolved one."""
    from huggingface_hub import HfApi

    url = hub_endpoint(cfg, endpoint)
    _sync_xet(url)
    return HfApi(endpoint=url, token=token if token is not None else hub_token(),
                 library_name="hubbot", library_version=__version__)


def _sync_xet(endpoint: str) -> None:
    """Switch the client's Xet uploads off for a loopback Hub (it speaks LFS only) or when HF_HUB_DISABLE_XET is set.

    huggingface_hub reads HF_HUB_DISABLE_XET once at import; hubbot re-reads it here so the
    setting a run starts with is the one used.
    """
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    host = urlsplit(endpoint).hostname or ""
    flag = os.environ.get("HF_HUB_DISABLE_XET", "").strip().lower() in ("1", "true", "yes", "on")
    if flag or host in ("127.0.0.1", "localhost", "::1"):
        constants.HF_HUB_DISABLE_XET = True


def redact(text: str, token: str | None = None) -> str:
    """``text`` with the current token (and ``token``) replaced by ``***``."""
    for secret in {token, hub_token()}:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_connection_error(exc: BaseException) -> bool:
    """A dropped or refused connection or a timeout (httpx2 classes, checked by name to avoid importing it)."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"TimeoutException", "NetworkError", "RemoteProtocolError", "ConnectError",
                         "ReadError", "WriteError", "ProtocolError", "TransportError"}) or isinstance(exc, ConnectionError)


def _root(exc: BaseException) -> BaseException:
    """The HTTP or connection error behind wrappers such as the client's ``RuntimeError('Error while uploading')``."""
    seen = 0
    while seen < 5 and exc.__cause__ is not None and _status(exc) is None and not _is_connection_error(exc):
        exc = exc.__cause__
        seen += 1
    return exc


def is_retryable(exc: BaseException) -> bool:
    """True for 408/429/5xx answers and for dropped connections and timeouts."""
    exc = _root(exc)
    status = _status(exc)
    if status is not None:
        return status in RETRY_STATUS
    return _is_connection_error(exc)


def retry_delay(exc: BaseException, attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: the server's ``RateLimit`` / ``Retry-After`` if given, else backoff."""
    response = getattr(_root(exc), "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        from huggingface_hub.utils import parse_ratelimit_headers

        info = parse_ratelimit_headers(headers)
    except Exception:  # a malformed header must not turn a retry into a crash
        info = None
    if info is not None and info.remaining == 0:
        return min(RATE_LIMIT_MAX_SECONDS, float(info.reset_in_seconds) + 0.5)
    retry_after = str(headers.get("retry-after", "") or "").strip()
    if retry_after.isdigit():
        return min(RATE_LIMIT_MAX_SECONDS, float(retry_after))
    backoff = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    return backoff * (0.75 + 0.5 * random.random())


def with_retries(fn: Callable[[], T], what: str, *, attempts: int | None = None,
                 on_retry: Callable[[BaseException], None] | None = None,
                 also_retry: frozenset[int] = frozenset()) -> T:
    """Call ``fn`` until it succeeds or fails for good; retryable failures wait and try again.

    ``on_retry`` runs before each new attempt (publish uses it to re-read the remote state, so a
    commit whose answer was lost is never made twice). ``also_retry`` adds HTTP statuses that are
    worth another attempt for this call only. The last failure propagates unchanged.
    """
    total = attempts or RETRY_ATTEMPTS
    for attempt in range(1, total + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= total or not (is_retryable(exc) or _status(_root(exc)) in also_retry):
                raise
            delay = retry_delay(exc, attempt)
            status = _status(_root(exc))
            log.warning("%s failed (%s); retry %d/%d in %.1f s", what, status or type(_root(exc)).__name__,
                        attempt, total - 1, delay)
            sleep(delay)
            if on_retry is not None:
                on_retry(exc)
    raise AssertionError("unreachable")


def hub_error(exc: BaseException, *, repo: str, action: str, endpoint: str | None = None,
              revision: str | None = None) -> HubError:
    """One actionable line for a failed Hub call ``action`` (e.g. 'uploading model-Q4_K_M.gguf') on ``repo``."""
    from huggingface_hub import errors as hf

    exc = _root(exc)
    where = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
    has_token = hub_token() is not None
    status = _status(exc)
    owner = repo.split("/")[0]
    if isinstance(exc, hf.GatedRepoError):
        msg = (f"{repo} is gated and your account has no access (while {action}): request access at {where}/{repo} "
               "and wait for approval, or use a token of an account that has it")
    elif isinstance(exc, hf.RevisionNotFoundError):
        msg = f"revision {revision!r} not found in {repo} (while {action}): use an existing branch, or omit --revision"
    elif isinstance(exc, hf.RepositoryNotFoundError) and status != 401:
        msg = (f"repo {repo} not found at {where} or your token cannot see it (while {action}): check target.repo, "
               f"and that the token's account owns or can write to {owner!r}")
    elif status == 401:
        msg = (f"the Hub at {where} rejected the token (401) while {action}: set HF_TOKEN to a valid token or run "
               "`hf auth login`" if has_token else
               f"no Hub token is set and {where} needs one (401) for {action}: set HF_TOKEN or run `hf auth login` "
               "with a token that has write access")
    elif status == 403:
        msg = (f"your token may not write to {repo} (403) while {action}: use a token with write access to "
               f"{owner!r} (a 'write' token, or a fine-grained one with write permission on that repo)")
    elif status == 412:
        msg = f"{repo} changed while hubbot was {action} (412): rerun to publish on top of the new state"
    elif status == 429:
        msg = (f"the Hub kept rate-limiting requests (429) while {action}: wait a few minutes and rerun; "
               "uploaded files are kept and the run resumes")
    elif status is not None and status >= 500:
        msg = (f"the Hub failed (HTTP {status}) while {action}, also after retries: rerun later; uploaded files are "
               "kept and the run resumes")
    elif _is_connection_error(exc):
        msg = (f"lost the connection to {where} while {action} ({type(exc).__name__}): check the network or "
               "HF_ENDPOINT, then rerun to resume")
    elif status is not None:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        msg = f"the Hub refused {action} on {repo} (HTTP {status}: {first})"
    else:
        msg = f"{action} on {repo} failed: {type(exc).__name__}: {exc}"
    return HubError(redact(msg))


@contextlib.contextmanager
def hub_errors(repo: str, action: str, endpoint: str | None = None, revision: str | None = None) -> Iterator[None]:
    """Turn Hub and connection failures inside the block into one-line ``HubError``s."""
    try:
        yield
    except HubbotError:
        raise
    except Exception as exc:
        root = _root(exc)
        if _status(root) is None and not _is_connection_error(root) and not _is_hf_error(root):
            raise
        raise hub_error(exc, repo=repo, action=action, endpoint=endpoint, revision=revision) from None


def _is_hf_error(exc: BaseException) -> bool:
    from huggingface_hub import errors as hf

    return isinstance(exc, (hf.HfHubHTTPError, hf.RepositoryNotFoundError, hf.GatedRepoError))


def download_file(repo: str, file: str, revision: str | None = None, endpoint: str | None = None, *,
                  repo_type: str = "model", cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """Download ``file`` of ``repo`` into the Hub cache: (local path, the commit sha it came from).

    The revision is resolved to a commit sha first and the file fetched at that sha, so a branch
    moving during the download cannot mix two commits.
    """
    from huggingface_hub import hf_hub_download

    api = make_api(endpoint=endpoint)
    with hub_errors(repo, f"downloading {file}", api.endpoint, revision):
        info = api.repo_info(repo, repo_type=repo_type, revision=revision)
        sha = info.sha or revision or "main"
        path = hf_hub_download(repo, file, revision=sha, repo_type=repo_type, endpoint=api.endpoint,
                               token=api.token, cache_dir=str(cache_dir) if cache_dir else None,
                               library_name="hubbot", library_version=__version__)
    return Path(path), sha


def remote_gated(api: HfApi, repo: str) -> Any:
    """The gating setting of ``repo`` ('auto', 'manual' or False), or None when it cannot be read."""
    with contextlib.suppress(Exception):
        return getattr(api.model_info(repo), "gated", None)
    return None
