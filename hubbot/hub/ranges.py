"""Reading the header of a GGUF file on the Hub with HTTP range requests, without its weights.

A plan needs a model's tensor inventory, not its weights: for a 54 GB source that is the first
few MB. ``fetch_gguf_header`` asks for the first 8 MiB of the file (a 262,144-token vocabulary
fits), then for twice as much until the header is complete, and reads each answer as a stream
so a server that ignores ``Range`` costs no more than the bytes asked for.
"""

from __future__ import annotations

import logging

from hubbot import __version__
from hubbot.errors import SourceError
from hubbot.gguf_io.header import NotGGUF, header_length
from hubbot.hub.client import hub_errors, with_retries

log = logging.getLogger(__name__)

FIRST_BYTES = 8 << 20
MAX_HEADER_BYTES = 512 << 20


def _read_range(url: str, token: str | None, start: int, end: int) -> bytes:
    """Bytes ``start``..``end`` (inclusive) of ``url``; fewer only when the file ends first."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = build_hf_headers(token=token, library_name="hubbot", library_version=__version__)
    headers["Range"] = f"bytes={start}-{end}"
    want = end - start + 1
    parts: list[bytes] = []
    got = 0
    with get_session().stream("GET", url, headers=headers, follow_redirects=True) as response:
        hf_raise_for_status(response)
        skip = start if response.status_code == 200 else 0  # Range ignored: the body starts at byte 0
        for piece in response.iter_bytes():
            if skip:
                drop = min(skip, len(piece))
                piece, skip = piece[drop:], skip - drop
            parts.append(piece)
            got += len(piece)
            if got >= want:
                break
    return b"".join(parts)[:want]


def fetch_gguf_header(repo: str, filename: str, revision: str, size: int, *, endpoint: str, token: str | None,
                      role: str = "source") -> bytes:
    """The header of GGUF ``filename`` (``size`` bytes) in model repo ``repo`` at commit ``revision``:
    every byte before its tensor data. One-line errors for Hub failures and for files that are not GGUF."""
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    buf = b""
    step = FIRST_BYTES
    where = f"{repo}/{filename}"
    while True:
        start, end = len(buf), min(size, len(buf) + step) - 1
        with hub_errors(repo, f"reading the header of {filename}", endpoint, revision, role=role,  # type: ignore[arg-type]
                        filename=filename):
            buf += with_retries(lambda s=start, e=end: _read_range(url, token, s, e), f"reading {where}")
        try:
            length = header_length(buf)
        except NotGGUF as exc:
            raise SourceError(f"{where} is not a GGUF file ({exc}); check the file name") from None
        if length is not None:
            log.info("read the %d-byte header of %s in %d bytes", length, where, len(buf))
            return buf[:length]
        if len(buf) >= size:
            raise SourceError(f"{where} ends inside its header ({size} bytes); the file on the Hub is truncated")
        if len(buf) >= MAX_HEADER_BYTES:
            raise SourceError(f"{where}: its header is larger than {MAX_HEADER_BYTES >> 20} MiB; hubbot cannot plan "
                              "from it without downloading the file")
        step *= 2
