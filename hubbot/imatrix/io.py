"""Importance-matrix files: llama.cpp's GGUF format (current) and its legacy ``.dat`` format.

Both hold, per weight matrix, statistics of the activations that multiply it. In memory
hubbot keeps llama.cpp's collector state: raw sums of squares per input column
(``in_sum2``, one row per expert) and how many activation rows went into each sum
(``counts``). The quantizer wants the per-column mean, see ``ImatrixData.values``.

GGUF layout (what llama.cpp's ``llama-imatrix`` writes): ``general.type = "imatrix"``,
``imatrix.datasets`` (strings), ``imatrix.chunk_count``, ``imatrix.chunk_size``, and per
matrix two F32 tensors ``<name>.in_sum2`` ``[ne0, n_mat]`` and ``<name>.counts`` ``[1, n_mat]``.

Legacy ``.dat``: ``int32 n_entries``, then per entry ``int32 len, name, int32 ncall,
int32 nval, float32[nval]`` holding ``mean * ncall``, then optionally ``int32 last_chunk,
int32 len, dataset``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hubbot.errors import ImatrixError
from hubbot.workdir import atomic_path

GGUF_MAGIC = b"GGUF"
_SUM_SUFFIX = ".in_sum2"
_COUNT_SUFFIX = ".counts"


@dataclass
class ImatrixData:
    """Sums of squared activations per input column and their row counts, per weight matrix.

    ``sums[name]`` has shape ``(n_mat, ne0)`` and ``counts[name]`` shape ``(n_mat,)``; n_mat is
    the number of experts (1 for dense matrices).
    """

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def __len__(self) -> int:
        return len(self.sums)

    def values(self) -> dict[str, np.ndarray]:
        """name -> float32 per-column means, length ``ne0 * n_mat``, as the quantizer takes them.

        Matrices (or experts) that never saw an activation get 1.0 for every column, as
        llama.cpp's quantize tool does: no information means equal weights, not zero weights.
        """
        out: dict[str, np.ndarray] = {}
        for name, sums in self.sums.items():
            counts = self.counts[name].astype(np.float64)
            mean = np.ones(sums.shape, dtype=np.float64)
            seen = counts > 0
            mean[seen] = sums[seen].astype(np.float64) / counts[seen, None]
            out[name] = mean.astype(np.float32).reshape(-1)
        return out


def _read_error(path: Path, what: str) -> ImatrixError:
    return ImatrixError(f"{path}: not a valid importance matrix ({what}); regenerate it with `hubbot imatrix` or llama-imatrix")


def read_imatrix(path: Path) -> ImatrixData:
    """Load a GGUF or legacy ``.dat`` importance matrix (the format is detected from the bytes)."""
    path = Path(path)
    if not path.is_file():
        raise ImatrixError(f"{path}: importance matrix not found; check imatrix.file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    return read_gguf(path) if magic == GGUF_MAGIC else read_dat(path)


def read_gguf(path: Path) -> ImatrixData:
    from hubbot.errors import SourceError
    from hubbot.gguf_io.info import open_reader

    try:
        reader = open_reader(path)
    except SourceError as exc:
        raise _read_error(path, str(exc).split(": ", 1)[-1].split(";")[0]) from None
    fields = reader.fields
    gtype = fields.get("general.type")
    if gtype is None or gtype.contents() != "imatrix":
        raise ImatrixError(f"{path}: this GGUF is not an importance matrix (general.type is "
                           f"{gtype.contents() if gtype else 'missing'}); pass the imatrix file, not a model")
    data = ImatrixData()
    if "imatrix.datasets" in fields:
        data.datasets = [str(s) for s in fields["imatrix.datasets"].contents()]
    if "imatrix.chunk_count" in fields:
        data.chunk_count = int(fields["imatrix.chunk_count"].contents())
    if "imatrix.chunk_size" in fields:
        data.chunk_size = int(fields["imatrix.chunk_size"].contents())
    tensors = {t.name: t for t in reader.tensors}
    for tname, t in tensors.items():
        if not tname.endswith(_SUM_SUFFIX):
            continue
        name = tname[: -len(_SUM_SUFFIX)]
        counts_t = tensors.get(name + _COUNT_SUFFIX)
        if counts_t is None:
            raise _read_error(path, f"{tname} has no matching {name}{_COUNT_SUFFIX}")
        if t.tensor_type.name != "F32" or counts_t.tensor_type.name != "F32":
            raise _read_error(path, f"{name} is stored as {t.tensor_type.name}, expected F32")
        ne0 = int(t.shape[0])
        n_mat = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
        counts = np.array(counts_t.data, dtype=np.float32).reshape(-1)
        if counts.size != n_mat:
            raise _read_error(path, f"{name} has {n_mat} matrices but {counts.size} counts")
        data.sums[name] = np.array(t.data, dtype=np.float32).reshape(n_mat, ne0)
        data.counts[name] = counts
    if not data.sums:
        raise _read_error(path, "no <name>.in_sum2 tensors")
    del reader
    return data


def read_dat(path: Path, chunk_size: int = 512) -> ImatrixData:
    """Legacy format. Its values are ``mean * ncall``; ``counts`` become ``ncall * chunk_size``
    (llama.cpp's own conversion), so ``values()`` gives back the stored means."""
    raw = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(raw):
            raise _read_error(path, "file ends early")
        out = struct.unpack_from(fmt, raw, pos)
        pos += size
        return out

    (n_entries,) = take("<i")
    if n_entries <= 0 or n_entries > 1_000_000:
        raise _read_error(path, f"bad entry count {n_entries}")
    data = ImatrixData(chunk_size=chunk_size)
    for _ in range(n_entries):
        (name_len,) = take("<i")
        if not 0 < name_len < 4096:
            raise _read_error(path, f"bad name length {name_len}")
        name = raw[pos:pos + name_len].decode("utf-8", errors="replace")
        pos += name_len
        ncall, nval = take("<ii")
        if nval <= 0 or pos + 4 * nval > len(raw):
            raise _read_error(path, f"entry {name!r} has a bad length {nval}")
        vals = np.frombuffer(raw, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        # One count for all experts: the legacy format does not keep them apart.
        rows = max(ncall, 0) * chunk_size
        data.sums[name] = (vals * (chunk_size if ncall > 0 else 1)).reshape(1, nval)
        data.counts[name] = np.array([rows if ncall > 0 else 0], dtype=np.float32)
        if ncall <= 0:
            data.sums[name] = np.zeros((1, nval), dtype=np.float32)
    if pos + 8 <= len(raw):
        (data.chunk_count,) = take("<i")
        (ds_len,) = take("<i")
        if 0 < ds_len <= len(raw) - pos:
            data.datasets = [raw[pos:pos + ds_len].decode("utf-8", errors="replace")]
    return data


def write_gguf(data: ImatrixData, path: Path) -> None:
    """Write llama.cpp's GGUF imatrix format (atomically)."""
    import gguf

    with atomic_path(Path(path)) as tmp:
        w = gguf.GGUFWriter(tmp, arch="", endianess=gguf.GGUFEndian.LITTLE)
        # An imatrix has no architecture; llama.cpp writes general.type only.
        w.kv_data[0].pop("general.architecture", None)
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", list(data.datasets) or ["unknown"])
        w.add_uint32("imatrix.chunk_count", int(data.chunk_count))
        w.add_uint32("imatrix.chunk_size", int(data.chunk_size))
        for name in sorted(data.sums):
            sums = np.ascontiguousarray(data.sums[name], dtype=np.float32)
            counts = np.ascontiguousarray(data.counts[name], dtype=np.float32).reshape(-1, 1)
            # numpy shape (n_mat, ne0) is GGUF shape [ne0, n_mat]
            w.add_tensor(name + _SUM_SUFFIX, sums)
            w.add_tensor(name + _COUNT_SUFFIX, counts)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def write_dat(data: ImatrixData, path: Path) -> None:
    """Write the legacy ``.dat`` format the way llama.cpp does (atomically)."""
    chunk = max(1, data.chunk_size or 512)
    parts = [struct.pack("<i", len(data.sums))]
    for name in sorted(data.sums):
        sums = data.sums[name].astype(np.float64)
        counts = data.counts[name].astype(np.float64)
        # Ceiling division so a matrix seen in part of a chunk does not get ncall 0.
        ncall = int((counts.max() + chunk - 1) // chunk) if counts.size else 0
        mean = np.ones_like(sums)
        seen = counts > 0
        mean[seen] = sums[seen] / counts[seen, None]
        stored = (mean * ncall).astype("<f4").reshape(-1)
        bname = name.encode()
        parts += [struct.pack("<i", len(bname)), bname, struct.pack("<ii", ncall, stored.size), stored.tobytes()]
    dataset = (data.datasets[0] if data.datasets else "").encode()
    parts += [struct.pack("<i", int(data.chunk_count)), struct.pack("<i", len(dataset)), dataset]
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(b"".join(parts))


def write_imatrix(data: ImatrixData, path: Path) -> None:
    """GGUF, or legacy ``.dat`` when the file name ends in ``.dat``."""
    (write_dat if Path(path).suffix == ".dat" else write_gguf)(data, path)
