"""Progress bars that appear on a terminal and stay quiet everywhere else."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    if _quiet or os.environ.get("HUBBOT_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def bar(total: float | None = None, desc: str = "", unit: str = "it", **kw) -> tqdm:
    """A tqdm bar on stderr; disabled (a no-op) when not on a terminal or when quiet."""
    scale = unit == "B"
    return tqdm(
        total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
        disable=not enabled(), file=sys.stderr, leave=False, dynamic_ncols=True, **kw,
    )
