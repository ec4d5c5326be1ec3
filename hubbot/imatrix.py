"""Importance matrices (placeholder until the imatrix work lands)."""

from __future__ import annotations


def ensure_imatrix(cfg, source, work, threads: int, compute: bool = True):
    from .errors import ImatrixError

    raise ImatrixError("importance matrices are not implemented yet")
