"""A GGUF file's header without its tensor data: how long it is, and a stand-in file made of it.

Planning a build needs only the header (metadata and tensor descriptions): llama.cpp's dry run
reads nothing else. ``header_length`` finds where the tensor data starts in the first bytes of a
file, so a remote GGUF can be read in ranges until its header is complete; ``write_standin``
writes those bytes and extends the file to its full size without writing the rest (a sparse
file: a 54 GB model's stand-in takes the header's few MB of disk).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from gguf import GGUFValueType

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_SCALAR_SIZES = {
    GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.BOOL: 1,
    GGUFValueType.UINT16: 2, GGUFValueType.INT16: 2,
    GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4,
    GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8,
}


_U64 = struct.Struct("<Q")


def added_kv_bytes(pairs: list[tuple[str, object]]) -> int:
    """An upper bound of what writing these metadata pairs adds to a GGUF header.

    Each pair costs its key (u64 length + bytes), a u32 value type and the value, as llama.cpp's
    quantizer writes it: strings as u64 length + bytes, ints and floats as 8 bytes, bools as 1.
    Keys the file already has are counted in full and the data-section alignment is added once,
    so the bound never falls short of the real header. The two keys the quantizer itself sets
    (file type, quantization version) count too, for sources that lack them.
    """
    total = DEFAULT_ALIGNMENT
    for key, value in [*pairs, ("general.file_type", 0), ("general.quantization_version", 0)]:
        if isinstance(value, str):
            size = 8 + len(value.encode())
        elif isinstance(value, bool):
            size = 1
        else:
            size = 8
        total += 8 + len(key.encode()) + 4 + size
    return total


class NotGGUF(ValueError):
    """The bytes are not the start of a GGUF file (version 2 or 3, little-endian)."""


class _Short(Exception):
    """The header goes on past the bytes given."""


class _Cursor:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise _Short
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> bytes:
        return self.take(self.u64())

    def skip_strings(self, count: int) -> None:
        # A 262,144-token vocabulary: a tight loop over lengths only, without slicing the bytes.
        buf, pos, end, unpack = self.buf, self.pos, len(self.buf), _U64.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise _Short
            pos += 8 + unpack(buf, pos)[0]
        if pos > end:
            raise _Short
        self.pos = pos

    def value(self, vtype: int) -> object:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            itype, count = self.u32(), self.u64()
            if itype in _SCALAR_SIZES:
                self.take(_SCALAR_SIZES[GGUFValueType(itype)] * count)  # skipped in one step, not per item
            elif itype == GGUFValueType.STRING:
                self.skip_strings(count)
            else:
                for _ in range(count):
                    self.value(itype)
            return None
        if vtype not in _SCALAR_SIZES:
            raise NotGGUF(f"unknown metadata value type {vtype}")
        raw = self.take(_SCALAR_SIZES[GGUFValueType(vtype)])
        return int.from_bytes(raw, "little") if vtype in (GGUFValueType.UINT32, GGUFValueType.UINT64) else raw


def header_length(buf: bytes) -> int | None:
    """Offset of the tensor data in a GGUF file starting with ``buf`` (the aligned end of its header);
    None when ``buf`` ends before the header does. NotGGUF when ``buf`` is not a GGUF file."""
    cur = _Cursor(buf)
    try:
        if cur.take(4) != GGUF_MAGIC:
            raise NotGGUF("it does not start with 'GGUF'")
        version = cur.u32()
        if version not in (2, 3):
            raise NotGGUF(f"GGUF version {version} is not one hubbot reads (2 or 3)")
        n_tensors, n_kv = cur.u64(), cur.u64()
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = cur.string()
            vtype = cur.u32()
            value = cur.value(vtype)
            if key == b"general.alignment" and isinstance(value, int):
                alignment = value or DEFAULT_ALIGNMENT
        for _ in range(n_tensors):
            cur.string()  # name
            n_dims = cur.u32()
            cur.take(8 * n_dims + 4 + 8)  # dimensions, type, offset
    except _Short:
        return None
    return (cur.pos + alignment - 1) // alignment * alignment


def write_standin(header: bytes, size: int, path: Path) -> Path:
    """A file of ``size`` bytes that starts with ``header`` and holds nothing else (a hole, where the
    file system supports it); written next to ``path`` and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as fh:
            fh.write(header[:size])
            fh.truncate(size)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
