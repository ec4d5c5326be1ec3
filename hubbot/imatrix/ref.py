"""An importance matrix as the build stage receives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ImatrixRef:
    """An importance matrix ready to pass to the quantizer, and what goes into the GGUF about it."""

    path: Any
    sha256: str
    dataset: str
    chunks: int
    entries: int
    values: dict | None = None  # name -> float32 array, loaded lazily by imatrix.py

    def metadata(self) -> list[tuple[str, Any]]:
        # The keys llama.cpp's quantize tool writes, so tools that read them see ours too.
        return [
            ("quantize.imatrix.file", self.path.name),
            ("quantize.imatrix.dataset", self.dataset[:120]),
            ("quantize.imatrix.entries_count", int(self.entries)),
            ("quantize.imatrix.chunks_count", int(self.chunks)),
        ]
