"""Who may do what on the local Hub: accounts, the tokens file, gating and private repos, injected faults.

With an empty token table every request is allowed (the offline demo). Otherwise a token maps to
an account with read or write rights: unknown tokens get 401, read-only or foreign-namespace
writes 403, private repos look missing and gated repos answer ``GatedRepo`` on file downloads to
users without access, with the Hub's ``X-Error-Code`` so the real client raises its real exceptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hubbot.errors import LocalHubError

TOKENS_SHAPE = '{"<token>": {"user": "<name>", "write": true, "orgs": ["<org>"]}} ("write" and "orgs" optional)'
_ENTRY_KEYS = frozenset({"user", "write", "orgs"})


@dataclass
class Account:
    user: str
    write: bool = True
    orgs: tuple[str, ...] = ()


@dataclass
class Fault:
    """One injected fault on a route; ``times`` requests are affected (then it is spent)."""

    route: str
    times: int = 1
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None       # lfs-upload: close the connection after this many body bytes
    throttle: float | None = None       # lfs-upload: bytes per second while reading the body
    delay: float = 0.0                  # seconds before answering (a slow commit)
    lose_response: bool = False         # commit: apply it, then drop the connection without answering
    hits: int = 0


def _json_kind(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), "a number")


def load_tokens(path: str | Path) -> dict[str, Account]:
    """The token table in a ``serve-hub --tokens`` file: token -> Account.

    A file that cannot be read, is not JSON or has another shape raises LocalHubError naming the
    file and the shape expected. Tokens are secrets: messages name entries by position, never by token.
    """
    def bad(what: str) -> LocalHubError:
        return LocalHubError(f"tokens file {path}: {what}; expected {TOKENS_SHAPE}")

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalHubError(f"cannot read the tokens file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise bad(f"the top level is {_json_kind(data)}, not an object")
    if not data:
        # An empty table would let every request in: surely not what a --tokens file was meant for.
        raise bad("it holds no tokens (leave out --tokens to let every request in)")
    tokens = {}
    for n, (token, entry) in enumerate(data.items(), 1):
        where = f"entry {n}"
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            raise bad(f"the token of {where} is empty or holds spaces, control or non-ASCII characters")
        if not isinstance(entry, dict):
            raise bad(f"{where} is {_json_kind(entry)}, not an object")
        if unknown := sorted(set(entry) - _ENTRY_KEYS):
            raise bad(f"{where} has the unknown key {unknown[0]!r}")
        user, write, orgs = entry.get("user"), entry.get("write", True), entry.get("orgs", [])
        if not isinstance(user, str) or not user or "/" in user or user != user.strip():
            raise bad(f'{where} needs "user": a user name without "/" or surrounding spaces')
        if not isinstance(write, bool):
            raise bad(f'"write" of {where} (user {user!r}) is {_json_kind(write)}, not true or false')
        if not isinstance(orgs, list) or not all(isinstance(o, str) and o for o in orgs):
            raise bad(f'"orgs" of {where} (user {user!r}) is not a list of organization names')
        tokens[token] = Account(user, write, tuple(orgs))
    return tokens


class AccessChecks:
    """Request-handler mixin: the caller's account and the Hub's answers when it may not read or write.

    Each check returns the repo's metadata when allowed; otherwise it has sent the Hub's error
    answer and returns None, so a route handler just returns.
    """

    def _account(self) -> tuple[Account | None, bool]:
        """(account, token_sent). In open mode (no token table) everyone is the 'local' writer."""
        hub = self.server_hub
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.startswith("Bearer ") else None
        if not hub.tokens:
            return Account("local", True), token is not None
        return (hub.tokens.get(token) if token else None), token is not None

    def _token_is_unknown(self) -> bool:
        """A token was sent that is not in the table (the Hub answers 401 to any route then)."""
        auth = self.headers.get("Authorization") or ""
        return bool(self.server_hub.tokens) and auth.startswith("Bearer ") and auth[7:].strip() not in self.server_hub.tokens

    def _readable(self, repo: str) -> dict | None:
        """The repo's metadata when the caller may read it; otherwise the Hub's answer is sent and None returned."""
        hub = self.server_hub
        account, sent = self._account()
        meta = hub.load_repo(repo)
        user = account.user if account else None
        owner = repo.split("/")[0]
        allowed = meta is not None and (not hub.tokens or user == owner or (account and owner in account.orgs)
                                        or user in meta.get("access", []))
        if meta is None or (meta["private"] and not allowed):
            self._error(401 if not sent else 404, "Repository not found", "RepoNotFound")
            return None
        if meta.get("gated") and not allowed and "/resolve/" in self.path:
            # Like the Hub: a gated repo's listing is public, its files are not.
            self._error(401 if not sent else 403, f"Access to model {repo} is restricted. You must have access to it "
                        "and be authenticated to access it. Please log in.", "GatedRepo")
            return None
        return meta

    def _writable(self, repo: str) -> dict | None:
        meta = self._readable(repo)
        if meta is None:
            return None
        if not self._may_write(repo.split("/")[0]):
            return None
        return meta

    def _may_write(self, namespace: str) -> bool:
        account, sent = self._account()
        if account is None:
            self._error(401, "You must be authenticated to do this (no token sent)" if not sent
                        else "Invalid credentials in Authorization header")
            return False
        if not self.server_hub.tokens:
            return True
        if not account.write:
            self._error(403, "This token has read access only; a token with write access is needed")
            return False
        if namespace != account.user and namespace not in account.orgs:
            self._error(403, f"You don't have the rights to write to the namespace {namespace}")
            return False
        return True

    def h_whoami(self, fault: Fault | None) -> None:
        account, _ = self._account()
        if account is None:
            self._error(401, "Invalid user token")
            return
        self._json({"type": "user", "name": account.user, "orgs": [{"name": o} for o in account.orgs],
                    "auth": {"accessToken": {"role": "write" if account.write else "read"}}})
