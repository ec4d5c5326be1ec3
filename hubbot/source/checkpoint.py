"""What hubbot knows of a Hugging Face checkpoint without loading it: the files the converter
reads, and the tensor inventory in the safetensors headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hubbot.errors import SourceError

# Files the converter reads besides the weights; anything else in the repo is not downloaded.
CONVERTER_FILES = (
    "config.json", "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
    "chat_template.json", "preprocessor_config.json", "tekken.json",
)


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes), without reading the data."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100 << 20:
                raise ValueError("header larger than 100 MB")
            return json.loads(fh.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise SourceError(f"{path.name} is not a readable safetensors file ({exc}); delete it and download again") from None


def safetensors_params(folder: Path) -> tuple[int, int]:
    """(parameter count, tensor count) from the safetensors headers in ``folder`` (no data read)."""
    n_params = n_tensors = 0
    for f in sorted(folder.glob("*.safetensors")):
        for name, meta in read_safetensors_header(f).items():
            if name == "__metadata__":
                continue
            count = 1
            for d in meta.get("shape", []):
                count *= int(d)
            n_params += count
            n_tensors += 1
    return n_params, n_tensors
