"""The one place hubbot makes a Hub client, retries what the client does not, and explains failures.

* ``make_api`` is the single ``HfApi`` factory, for source downloads and publishing alike (endpoint
  resolved and checked here, token from ``hubbot.hub.token``);
* ``with_retries`` retries the calls ``huggingface_hub`` sends once (commit, create_repo, settings,
  tag, branch) on 408/429/5xx and on connections that dropped or timed out, honouring
  ``Retry-After`` and ``RateLimit``; a refused connection or a bad address is never retried;
* ``hub_error`` / ``hub_errors`` turn client exceptions into one line saying what to do: a
  ``SourceError`` worded for fetching the source (``role="source"``) or a ``HubError`` worded for
  publishing to the target (``role="target"``); the words are in ``hubbot.hub.messages``;
* ``download_file`` fetches one file pinned to the commit it resolved to.

The token is never logged, printed or put in a message (see ``hubbot.hub.token``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from hubbot import __version__
from hubbot.errors import HubbotError, HubError, SourceError
from hubbot.hub.messages import source_message, target_message
from hubbot.hub.token import hub_token, redact, remember_secret, token_is_set

if TYPE_CHECKING:
    from huggingface_hub import HfApi

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
# Connection failures that another attempt cannot mend: retrying them only delays the message.
FINAL_FAILURES = frozenset({"connection refused", "unknown host", "not a valid URL", "offline mode (HF_HUB_OFFLINE)",
                            "request could not be sent"})

T = TypeVar("T")
Role = Literal["source", "target"]


# --- the client -------------------------------------------------------------------------------

def _configured_endpoint(settings: Any) -> str | None:
    """``target.endpoint`` of a Config, or ``endpoint`` of its TargetConfig."""
    return getattr(getattr(settings, "target", settings), "endpoint", None)


def hub_endpoint(settings: Any = None, endpoint: str | None = None) -> str:
    """The Hub URL: an explicit ``endpoint``, else ``HF_ENDPOINT``, else ``target.endpoint`` of
    ``settings`` (a Config or its TargetConfig), else huggingface.co; HubError when it is not an http(s) URL."""
    for origin, value in (("the endpoint given", endpoint), ("HF_ENDPOINT", os.environ.get("HF_ENDPOINT")),
                          ("target.endpoint", _configured_endpoint(settings))):
        if value and value.strip():
            check_endpoint(value.strip(), origin)
            return value.strip().rstrip("/")
    return DEFAULT_ENDPOINT


def check_endpoint(url: str, origin: str) -> None:
    """HubError unless ``url`` is an http:// or https:// address with a host (and a valid port)."""
    problem = None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        problem = str(exc)
    else:
        if parts.scheme not in ("http", "https"):
            problem = "it does not start with http:// or https://"
        elif not parts.hostname:
            problem = "it names no host"
    if problem:
        raise HubError(f"{origin} {url!r} is not a Hub address ({problem}): set it to a URL such as {DEFAULT_ENDPOINT}")


def make_api(settings: Any = None, *, endpoint: str | None = None, token: str | None = None) -> HfApi:
    """An ``HfApi`` for ``endpoint`` (see ``hub_endpoint``) with ``token`` or the configured one."""
    from huggingface_hub import HfApi

    url = hub_endpoint(settings, endpoint)
    _sync_xet(url)
    remember_secret(token)
    return HfApi(endpoint=url, token=token if token is not None else hub_token(),
                 library_name="hubbot", library_version=__version__)


def _sync_xet(endpoint: str) -> None:
    """Switch the client's Xet uploads off for a loopback Hub (it speaks LFS only) or when HF_HUB_DISABLE_XET is set.

    huggingface_hub reads HF_HUB_DISABLE_XET once at import; hubbot re-reads it here so the
    setting a run starts with is the one used.
    """
    from huggingface_hub import constants

    host = urlsplit(endpoint).hostname or ""
    flag = os.environ.get("HF_HUB_DISABLE_XET", "").strip().lower() in ("1", "true", "yes", "on")
    if flag or host in ("127.0.0.1", "localhost", "::1"):
        constants.HF_HUB_DISABLE_XET = True


# --- what went wrong ----------------------------------------------------------------------------

def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions behind it (cause, else context), a few levels deep."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 8 and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def connection_failure(exc: BaseException) -> str | None:
    """Why a request got no answer ('connection refused', 'unknown host', 'not a valid URL', 'timed out',
    'dropped', ...), or None when the failure was not on the connection (httpx2 classes checked by name)."""
    kinds = []
    for e in _chain(exc):
        names = {c.__name__ for c in type(e).__mro__}
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(e, socket.gaierror):
            temporary = e.errno in (getattr(socket, "EAI_AGAIN", -3),)
            return "name lookup failed" if temporary else "unknown host"
        if names & {"UnsupportedProtocol", "InvalidURL"}:
            return "not a valid URL"
        if "OfflineModeIsEnabled" in names:
            return "offline mode (HF_HUB_OFFLINE)"
        if "LocalProtocolError" in names:
            return "request could not be sent"
        if "TimeoutException" in names or isinstance(e, TimeoutError):
            kinds.append("timed out")
        elif names & {"NetworkError", "RemoteProtocolError", "ProtocolError", "TransportError"} or isinstance(
                e, ConnectionError):
            kinds.append("dropped")
    return kinds[0] if kinds else None


def _root(exc: BaseException) -> BaseException:
    """The HTTP or connection error behind wrappers such as the client's ``RuntimeError('Error while uploading')``."""
    seen = 0
    while seen < 5 and exc.__cause__ is not None and _status(exc) is None and connection_failure(exc) is None:
        exc = exc.__cause__
        seen += 1
    return exc


def is_retryable(exc: BaseException) -> bool:
    """True for 408/429/5xx answers and for connections that dropped or timed out."""
    root = _root(exc)
    status = _status(root)
    if status is not None:
        return status in RETRY_STATUS
    failure = connection_failure(root)
    return failure is not None and failure not in FINAL_FAILURES


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


def _kind(exc: BaseException) -> str:
    """What failed, in the terms the messages use (shared by the source and the target wording)."""
    from huggingface_hub import errors as hf

    if isinstance(exc, hf.HFValidationError):
        return "invalid-id"
    if isinstance(exc, hf.GatedRepoError):
        return "gated"
    if isinstance(exc, hf.RevisionNotFoundError):
        return "revision"
    if isinstance(exc, hf.RepositoryNotFoundError):
        return "repo"
    if isinstance(exc, hf.LocalEntryNotFoundError) or connection_failure(exc) in FINAL_FAILURES:
        return "unreachable"  # also a download that found no way to the Hub and nothing cached
    if isinstance(exc, hf.EntryNotFoundError):
        return "file"
    if _status(exc) is not None:
        return "status"
    if connection_failure(exc) is not None:
        return "lost"
    return "other"


def hub_error(exc: BaseException, *, repo: str, action: str, endpoint: str | None = None,
              revision: str | None = None, role: Role = "target", filename: str | None = None) -> HubbotError:
    """One actionable line for a failed Hub call: a SourceError for ``role='source'`` (fetching ``repo``,
    ``filename`` when one file), else a HubError for ``action`` (e.g. 'uploading model-Q4_K_M.gguf') on ``repo``."""
    root = _root(exc)
    kind = _kind(root)
    where = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
    why = connection_failure(root) or "no connection"
    has_token = token_is_set()
    if role == "source":
        return SourceError(redact(source_message(root, kind, _status(root), has_token, repo, where, revision, filename,
                                                 why)))
    return HubError(redact(target_message(root, kind, _status(root), has_token, repo, action, where, revision, why)))


@contextlib.contextmanager
def hub_errors(repo: str, action: str, endpoint: str | None = None, revision: str | None = None, *,
               role: Role = "target", filename: str | None = None) -> Iterator[None]:
    """Turn Hub and connection failures inside the block into one-line errors (see ``hub_error``).

    Other exceptions pass unchanged, except that on the source side any OS error but a full disk
    is explained too (a download writes into the cache as it reads from the network).
    """
    try:
        yield
    except HubbotError:
        raise
    except Exception as exc:
        root = _root(exc)
        if _status(root) is None and connection_failure(root) is None and not _is_hf_error(root):
            if role != "source" or not isinstance(exc, OSError) or _disk_full(exc):
                raise
        raise hub_error(exc, repo=repo, action=action, endpoint=endpoint, revision=revision, role=role,
                        filename=filename) from None


def _disk_full(exc: OSError) -> bool:
    return exc.errno == errno.ENOSPC or "No space left" in str(exc)


def _is_hf_error(exc: BaseException) -> bool:
    from huggingface_hub import errors as hf

    return isinstance(exc, (hf.HfHubHTTPError, hf.RepositoryNotFoundError, hf.GatedRepoError, hf.EntryNotFoundError,
                            hf.HFValidationError))


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
