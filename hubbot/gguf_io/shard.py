"""Splitting a GGUF into llama.cpp-compatible shards (``<stem>-00001-of-0000N.gguf``).

The first shard holds all metadata plus its share of tensors; every shard carries ``split.no``
(u16, 0-based), ``split.count`` (u16) and ``split.tensors.count`` (i32), the keys llama.cpp's
loader reads to find and check the other files when given shard 1. Tensor data is copied from the
memory-mapped input one tensor at a time, so memory stays flat whatever the model size. Shards
land in a temporary folder and are moved into place only when all of them are complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import gguf

from hubbot.errors import HubbotError
from hubbot.gguf_io.info import open_reader
from hubbot.manifest import Shard, Shards
from hubbot.progress import bar
from hubbot.workdir import WorkDir, human_bytes, sha256_file

log = logging.getLogger(__name__)

SPLIT_KEYS = (gguf.Keys.Split.LLM_KV_SPLIT_NO, gguf.Keys.Split.LLM_KV_SPLIT_COUNT,
              gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)


def shard_names(file_name: str, count: int) -> list[str]:
    stem = file_name.removesuffix(".gguf")
    return [gguf.SHARD_NAME_FORMAT.format(stem, i + 1, count) for i in range(count)]


def planned_shard_sizes(tensor_sizes: list[int], header_size: int, max_size: int) -> list[int]:
    """Approximate sizes of the shards ``split_gguf`` would write for tensors of ``tensor_sizes`` (file
    order): the writer's rule (a new shard when the next tensor would pass ``max_size``, at least one
    tensor per shard), with the header counted in the first shard."""
    shards: list[int] = [0]
    for size in tensor_sizes:
        if shards[-1] and shards[-1] + size > max_size:
            shards.append(0)
        shards[-1] += size
    shards[0] += header_size
    return shards


def split_gguf(src: Path, out_dir: Path, max_size: int) -> list[Path]:
    """Write ``src`` as shards of at most ``max_size`` tensor bytes each into ``out_dir``; the shard paths.

    A single tensor larger than ``max_size`` gets a shard of its own (it cannot be split).
    """
    reader = open_reader(src)
    arch_field = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise HubbotError(f"{src.name} has no general.architecture; it is not a model GGUF that llama.cpp can shard")
    arch = arch_field.contents()
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{src.stem}.", suffix=".shards.partial", dir=out_dir))
    try:
        writer = gguf.GGUFWriter(tmp_dir / src.name, arch=arch, split_max_size=max_size)
        alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
        if alignment is not None:
            writer.data_alignment = int(alignment.contents())
        for name, fld in reader.fields.items():
            if name.startswith("GGUF.") or name == gguf.Keys.General.ARCHITECTURE or name in SPLIT_KEYS:
                continue
            vtype = fld.types[0]
            sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, fld.contents(), vtype, sub_type=sub)
        for t in reader.tensors:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(int(t.n_bytes) for t in reader.tensors)
        with bar(total, f"shard {src.name}", unit="B") as pbar:
            for t in reader.tensors:
                writer.write_tensor_data(t.data)
                pbar.update(int(t.n_bytes))
        writer.close()
        written = sorted(tmp_dir.glob("*.gguf"))
        if len(written) == 1:
            # The writer keeps the plain name when everything fits in one shard.
            one = shard_names(src.name, 1)[0]
            written[0].rename(tmp_dir / one)
            written = [tmp_dir / one]
        final = []
        for p in written:
            target = out_dir / p.name
            os.replace(p, target)
            final.append(target)
        return final
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def ensure_shards(work: WorkDir, file_name: str, max_size: int) -> list[Shard]:
    """The shards of output ``file_name`` (written when missing or stale), recorded in its manifest entry.

    Returns them in shard order. The whole file stays in ``out/`` (it is the build's cache key and
    what bench measures); only the shards are published.
    """
    manifest = work.manifest
    entry = manifest.get(file_name)
    if entry is None:
        raise HubbotError(f"{file_name} is not in the manifest; run `hubbot build` first")
    recorded = entry.shards or Shards()
    if (recorded.source_sha256 == entry.sha256 and recorded.max_size == max_size
            and all(s.is_fresh(work.out) for s in entry.shard_files)):
        return entry.shard_files
    for old in entry.shard_files:
        (work.out / old.file).unlink(missing_ok=True)
    log.info("splitting %s into shards of at most %s", file_name, human_bytes(max_size))
    paths = split_gguf(work.out / file_name, work.out, max_size)
    files = []
    for p in paths:
        st = p.stat()
        files.append(Shard(file=p.name, sha256=sha256_file(p), size=st.st_size, mtime_ns=st.st_mtime_ns))
    manifest.put(file_name, replace(entry, shards=Shards(source_sha256=entry.sha256, max_size=max_size, files=files)))
    return files
