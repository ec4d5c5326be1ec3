"""The Hub token: found the way huggingface_hub finds it, checked before use, and never shown.

``hub_token`` asks ``huggingface_hub.get_token`` (OIDC in CI, ``HF_TOKEN``, the stored
``hf auth login`` token) after pointing the library at the token file the environment names
*now*: the library reads ``HF_HOME`` / ``HF_TOKEN_PATH`` once at import, while ``HF_TOKEN`` it
reads at each call. The token's form is checked before any request is made, so a pasted line
break or a non-ASCII character is one line naming where the token came from (never the token).

Every token hubbot has seen is remembered for ``redact``, which the CLI applies to each log
record (``install_redaction``), to the one-line errors it prints and to tracebacks.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from hubbot.errors import HubError

# Environment variables holding a token, in huggingface_hub's order of precedence.
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# "Bearer <anything>" as it appears in header dumps and transport errors, in any quoting.
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s'\"]+")
_SECRETS: set[str] = set()


def token_path() -> Path:
    """The stored-login token file the environment names now (``HF_TOKEN_PATH``, else ``$HF_HOME/token``)."""
    if env := os.environ.get("HF_TOKEN_PATH"):
        return Path(os.path.expandvars(env)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                     "huggingface")
    return Path(os.path.expandvars(str(home))).expanduser() / "token"


def _env_token() -> tuple[str, str] | None:
    """(raw value, variable name) of the first token variable that is set and not blank."""
    for name in TOKEN_VARIABLES:
        raw = os.environ.get(name)
        if raw and raw.strip():
            return raw, name
    return None


def check_token_form(token: str, origin: str) -> None:
    """HubError unless ``token`` (surrounding whitespace removed) is printable ASCII without spaces.

    Anything else cannot travel in an HTTP header: the transport would fail (after retries) with
    the whole token in its message. ``origin`` names where it came from, e.g. 'HF_TOKEN'.
    """
    value = token.strip()
    if all(0x21 <= ord(c) <= 0x7E for c in value):
        return
    if any(ord(c) > 0x7E for c in value):
        problem = "a character that is not ASCII"
    elif any(c in "\r\n" for c in value):
        problem = "a line break inside it"
    else:
        problem = "a space or control character inside it"
    fix = ("run `hf auth login` again or delete the file" if origin.startswith("the token file")
           else f"set {origin} to the token alone, as copied from your Hub settings (hf_...)")
    raise HubError(f"{origin} does not hold a valid Hub token ({problem}): {fix}")


def hub_token() -> str | None:
    """The token to send, or None; HubError when it is malformed. Remembered for ``redact``, never logged."""
    from huggingface_hub import constants, get_token

    found = _env_token()
    if found is not None:
        raw, name = found
        remember_secret(raw)
        # huggingface_hub drops line breaks anywhere in the value; a break inside is a paste error
        # (two lines, a header) that must not be glued into a different token.
        check_token_form(raw, name)
    path = token_path()
    constants.HF_TOKEN_PATH = str(path)
    if os.environ.get("HF_OIDC_RESOURCE"):
        origin = "the token exchanged for HF_OIDC_RESOURCE"
    else:
        origin = found[1] if found else f"the token file {path}"
    try:
        token = get_token()
    except UnicodeDecodeError:
        raise HubError(f"{origin} is not text: run `hf auth login` again or delete the file") from None
    except Exception as exc:  # OIDC exchange failures: the library's own, already one-line, text
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise HubError(f"getting {origin} failed: {redact(first)}") from None
    if token is not None:
        remember_secret(token)
        check_token_form(token, origin)
    return token


def token_is_set() -> bool:
    """True when a token is configured (in the environment or the token file), well-formed or not."""
    if _env_token() is not None:
        return True
    try:
        return bool(token_path().read_text(encoding="utf-8", errors="replace").strip())
    except OSError:
        return False


def remember_secret(value: str | None) -> None:
    """Have ``redact`` replace ``value`` (and the escaped forms error texts show it in) from now on."""
    if not value or len(value.strip()) < 4:
        return
    value = value.strip()
    forms = {value, value.encode("unicode_escape").decode("ascii"), repr(value.encode("utf-8"))[2:-1]}
    # A value broken over lines may be printed a piece at a time.
    forms |= {piece for piece in value.split() if len(piece) >= 8}
    _SECRETS.update(forms)


def redact(text: str) -> str:
    """``text`` with every token hubbot has seen (and any ``Bearer`` value) replaced by ``***``."""
    found = _env_token()
    if found is not None:
        remember_secret(found[0])
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return _BEARER.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Scrubs tokens from a record's message, arguments, traceback and stack before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report; it holds no text of ours
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction() -> None:
    """Put the filter on every root handler and redact uncaught tracebacks (the CLI calls this once per run)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    if not getattr(sys.excepthook, "redacting", False):
        sys.excepthook = _redacting_hook(sys.excepthook)


def _redacting_hook(previous):
    import traceback

    def hook(kind, value, tb) -> None:
        if issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, tb)
        sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))

    hook.redacting = True  # type: ignore[attr-defined]
    return hook
