"""Sizes as variants.yaml writes them: '50GB', '1.5GiB' or a plain number of bytes."""

from __future__ import annotations

import re

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(value: int | str) -> int:
    """Bytes in ``value``: an int, or a string such as '50GB' or '1.5GiB'."""
    if isinstance(value, int):
        return value
    m = SIZE.match(str(value))
    if not m:
        raise ValueError(f"cannot read size {value!r}; write it like '50GB' or '2GiB'")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "B").upper()])
