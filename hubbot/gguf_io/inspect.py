"""``hubbot inspect``'s data: a GGUF file's metadata, tensor types and bits per weight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubbot.gguf_io.info import read_info

_SHORT_META = 8  # list values longer than this are shortened in inspect output


def inspect_file(path: Path, all_metadata: bool = False) -> dict[str, Any]:
    info = read_info(Path(path))
    meta = {}
    for key, value in info.metadata.items():
        if not all_metadata and key.startswith("tokenizer."):
            continue
        if isinstance(value, list) and len(value) > _SHORT_META:
            value = value[:_SHORT_META] + [f"... {len(value)} items"]
        meta[key] = value
    return {
        "file": str(path), "architecture": info.architecture, "block_count": info.block_count,
        "tensor_count": len(info.tensors), "n_params": info.n_params, "size": Path(path).stat().st_size,
        "bpw": 8.0 * Path(path).stat().st_size / max(1, info.n_params),
        "tensor_types": info.type_counts, "metadata": meta,
    }
