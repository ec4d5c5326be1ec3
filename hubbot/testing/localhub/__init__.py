"""A Hub-compatible HTTP server on 127.0.0.1: the publish target and source of the tests, and the offline demo.

It answers the routes ``huggingface_hub`` uses to create a repo, upload over LFS, commit, list,
tag, branch, open pull requests, change settings and download, with the Hub's error headers
(``X-Error-Code``) so the real client raises its real exceptions. Tests can also seed repos
directly (``add_commit``, ``create_tag``, ``create_repo(gated=..., private=...)``, ``grant``),
inject faults (``inject``) and count what was requested and downloaded.

Rooms: ``store`` (repos, commits, refs and objects on disk), ``access`` (accounts, the tokens
file, gating, faults), ``reads`` and ``writes`` (the routes), ``handler`` (HTTP plumbing and the
route table), ``server`` (the LocalHub object).
"""

from hubbot.testing.localhub.access import Account, Fault, load_tokens
from hubbot.testing.localhub.server import LocalHub

__all__ = ["Account", "Fault", "LocalHub", "load_tokens"]
