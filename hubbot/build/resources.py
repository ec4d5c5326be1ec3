"""What each job of a release needs: peak disk, peak memory and CPU time, from the tensor inventory.

The release flow splits into jobs that share only the Hub and small artifacts:

- ``convert``: fetch the source (safetensors into the Hub cache, or a package/GGUF), convert it to
  the BF16 GGUF, build the staged float variant (the ladder's ``bf16``) and its shards, push them;
- ``imatrix``: download the staged BF16 once, compute the importance matrix and the reference
  distributions for KLD, hand both on as artifacts;
- ``build:<variant>``: download the staged BF16, build one variant, benchmark it against the
  reference distributions, upload it;
- ``card``: merge the results, render and push README.md.

Everything here is arithmetic on the GGUF header (``GGUFInfo``) and llama.cpp's dry-run types; no
weight is read. Disk: the files a job holds at its end (no job deletes anything before it ends, so
that is its peak). Memory: the step of the job that holds most, counted per item the way the engine
allocates it (see ``quantize_memory`` and ``inference_memory``). Time: see ``throughput.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hubbot.build import throughput as tp
from hubbot.gguf_io.info import GGUFInfo, TensorInfo

MAX_BUF = 8 << 30  # llama.cpp's LLAMA_QUANT_MAX_BUF_SIZE: rows converted at once stay under it
SOFTMAX_ROWS = 16  # hubbot.bench.quality.ROWS: rows per scoring block, one block per thread
UBATCH = 512  # llama.cpp's default micro-batch, the unit its compute buffer is sized for
_NORM = re.compile(r"_norm\b|_norm\.")
SOFTMAX_ITEM = "softmax blocks"  # scales with the benchmark's threads


def type_nbytes(n_elements: int, type_name: str) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    return n_elements // block * size


def quantizable(shape_tensors) -> list[TensorInfo]:
    """The tensors a quantizer converts (an estimate: float weights that are not norms)."""
    return [t for t in shape_tensors if t.type != "F32" and not _NORM.search(t.name)]


@dataclass
class Item:
    """One thing on disk or in memory: what it is, its size, and where it lives (disk items)."""

    what: str
    bytes: int
    where: str = "workdir"  # workdir | hf-cache | home | temp | ram

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "bytes": int(self.bytes), "where": self.where}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a model that decide its resource needs, read from its GGUF header."""

    arch: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_head: int
    n_head_kv: int
    head_k: int
    head_v: int
    n_ff: int
    file_bytes: int
    tensors: tuple[TensorInfo, ...]

    @classmethod
    def from_info(cls, info: GGUFInfo, file_bytes: int) -> ModelShape:
        a, m = info.architecture, info.metadata

        def num(key: str, default: int) -> int:
            v = m.get(f"{a}.{key}", default)
            return int(max(v) if isinstance(v, (list, tuple)) else v)

        embd = next((t for t in info.tensors if t.name == "token_embd.weight"), None)
        n_embd = num("embedding_length", 0)
        n_head = max(1, num("attention.head_count", 1))
        n_vocab = int(embd.shape[1]) if embd is not None and len(embd.shape) > 1 else 0
        return cls(a, info.block_count, n_embd, n_vocab, n_head, num("attention.head_count_kv", n_head),
                   num("attention.key_length", n_embd // n_head), num("attention.value_length", n_embd // n_head),
                   num("feed_forward_length", 4 * n_embd), file_bytes, tuple(info.tensors))

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def matmul_params(self) -> int:
        """Weights multiplied per token: 2-D block weights plus the output projection (tied: token_embd)."""
        names = {t.name for t in self.tensors}
        out = "output.weight" if "output.weight" in names else "token_embd.weight"
        return sum(t.n_elements for t in self.tensors
                   if len(t.shape) >= 2 and (t.name.startswith("blk.") or t.name == out))

    @property
    def block_matmul_params(self) -> int:
        """Weights multiplied per token inside the blocks: what an importance-matrix pass computes
        (hubbot's collector stops after the last block)."""
        return sum(t.n_elements for t in self.tensors if len(t.shape) >= 2 and t.name.startswith("blk."))

    @property
    def header_bytes(self) -> int:
        return max(0, self.file_bytes - sum(t.n_bytes for t in self.tensors))

    def imatrix_bytes(self) -> int:
        """Size of the importance matrix GGUF: per matmul weight, ``in_sum2`` (F32, ne0 values per
        expert) and ``counts``, each 32-byte aligned, plus names and tensor infos."""
        total = 1024  # header and imatrix.* keys
        for t in self.tensors:
            if t.name.startswith("blk.") and len(t.shape) >= 2 and not _NORM.search(t.name):
                n_exp = t.shape[2] if len(t.shape) > 2 else 1
                total += _pad(t.shape[0] * n_exp * 4) + _pad(4 * n_exp) + 2 * (len(t.name) + 48)
        return total


def _pad(n: int, align: int = 32) -> int:
    return (n + align - 1) // align * align


@dataclass
class VariantFacts:
    """One ladder entry as the resource plan sees it (from the dry run)."""

    name: str
    file: str
    type: str
    size: int
    uses_imatrix: bool
    tensor_types: dict[str, str] = field(default_factory=dict)  # tensor -> output type
    shards: list[dict] = field(default_factory=list)  # [{"file", "bytes", "tensors"}] when split
    auto: bool = False  # recipe: auto (its records list the types it raised and lowered per tensor)


@dataclass(frozen=True)
class SensitivityShape:
    """What measuring recipe: auto's sensitivity costs: the error table and the probe builds."""

    sample: int  # values per tensor in the error table
    n_types: int  # candidate types
    probe_tokens: int  # calibration tokens each probe is measured on
    max_bands: int  # probes: one per tensor role and one per block band (hubbot.budget.calibrate.design)
    base_type: str | None  # what a probe leaves its other tensors as (None: the source's type)


@dataclass
class BenchShape:
    """How much text the imatrix and the benchmark evaluate (chunks already capped by the texts)."""

    imatrix_ctx: int
    imatrix_chunks: int
    ctx: int
    chunks: int
    batch_chunks: int
    speed: bool
    repetitions: int
    threads: int

    # recipe: auto in the ladder: the sensitivity the imatrix job measures once (None: no auto file)
    sensitivity: SensitivityShape | None = None

    @property
    def scored_rows(self) -> int:
        return self.chunks * (self.ctx - 1 - self.ctx // 2)


# --- memory -----------------------------------------------------------------------------------

def quantize_memory(shape: ModelShape, tensor_types: dict[str, str], imatrix: bool) -> list[Item]:
    """Resident memory of llama.cpp's quantizer writing one variant.

    The source is memory-mapped and each tensor unmapped after use, so at most one tensor's
    pages are resident; rows are expanded to F32 and quantized in slabs under ``MAX_BUF``, into two
    buffers that only ever grow (so each peaks at its largest tensor, possibly different ones).
    """
    mapped = f32 = work = 0
    for t in shape.tensors:
        dst = tensor_types.get(t.name, t.type)
        mapped = max(mapped, t.n_bytes)
        if dst == t.type or not t.shape:
            continue
        ne0 = t.shape[0]
        nrows = max(1, t.n_elements // ne0)
        row_dst = type_nbytes(ne0, dst)
        per_row = t.n_bytes // nrows + row_dst + (0 if t.type == "F32" else ne0 * 4)
        slab = max(1, min(nrows, MAX_BUF // per_row))
        if t.type != "F32":
            f32 = max(f32, slab * ne0 * 4)
        work = max(work, slab * row_dst)
    items = [Item("quantizer process", int(tp.QUANTIZER_BASE.value), "ram"),
             Item("largest source tensor (memory-mapped)", mapped, "ram"),
             Item("F32 expansion buffer", f32, "ram"), Item("quantized output buffer", work, "ram"),
             Item("hubbot process", int(tp.PROCESS_BASE.value), "ram")]
    if imatrix:
        # The parent holds the matrix; the child gets a copy and llama.cpp copies it once more.
        items.append(Item("importance matrix (3 copies)", 3 * shape.imatrix_bytes(), "ram"))
    return items


def inference_memory(shape: ModelShape, model_bytes: int, *, ctx: int, n_seq: int, n_outputs: int,
                     scoring_threads: int = 0) -> list[Item]:
    """Resident memory of a llama.cpp context running ``model_bytes`` of weights on the CPU.

    The weights are memory-mapped and all touched every pass (they must fit in RAM or every chunk
    reads them from disk again); the KV cache holds F16 keys and values for ``ctx * n_seq`` cells
    in every layer; the output buffer holds ``n_vocab`` float logits per requested row; the compute
    buffer is sized for one micro-batch's logits and feed-forward activations.
    """
    cells = ctx * n_seq
    ubatch = min(UBATCH, cells)
    kv = shape.n_layer * cells * shape.n_head_kv * (shape.head_k + shape.head_v) * 2
    compute = ubatch * 4 * (shape.n_vocab + 3 * shape.n_ff + shape.n_head * min(cells, ctx * n_seq))
    items = [Item("model weights (memory-mapped)", model_bytes, "ram"), Item("KV cache (F16)", kv, "ram"),
             Item("logits buffer", shape.n_vocab * max(n_outputs, n_seq) * 4, "ram"),
             Item("compute buffer", compute, "ram"), Item("hubbot process", int(tp.PROCESS_BASE.value), "ram")]
    if scoring_threads:
        # Each scoring thread keeps a float32 block of 16 rows and numpy temporaries of the same size.
        items.append(Item(SOFTMAX_ITEM, 2 * scoring_threads * SOFTMAX_ROWS * shape.n_vocab * 4, "ram"))
    return items


# --- disk -------------------------------------------------------------------------------------

def reference_bytes(shape: ModelShape, bench: BenchShape) -> int:
    """The sparse reference store (``bench.reference``): per scored row its step/offset and start
    offset (16 bytes) plus a u32 index and a u16 code per non-zero entry."""
    rows = bench.scored_rows
    nonzero = min(shape.n_vocab, int(tp.REFERENCE_NONZERO.value))
    return rows * (16 + 6 * nonzero) + 8 + 4096


def shard_layout(shape: ModelShape, tensor_types: dict[str, str], file_name: str, max_size: int) -> list[dict]:
    """The shards ``hubbot.gguf_io.shard.split_gguf`` writes for this variant, computed with gguf's own
    split rule (a new shard when the next tensor would push the shard's tensor bytes over ``max_size``)."""
    import gguf
    import numpy as np

    from hubbot.gguf_io.shard import shard_names

    writer = gguf.GGUFWriter(None, shape.arch, split_max_size=max_size)
    for t in shape.tensors:
        dst = tensor_types.get(t.name, t.type)
        qtype = gguf.GGMLQuantizationType[dst]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        byte_shape = (*reversed(t.shape[1:]), t.shape[0] // block * size)
        writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), type_nbytes(t.n_elements, dst), raw_dtype=qtype)
    groups = writer.tensors
    names = shard_names(file_name, len(groups))
    meta = max(0, shape.header_bytes - sum(len(t.name) + 40 for t in shape.tensors))
    shards = []
    for i, (name, group) in enumerate(zip(names, groups)):
        data = sum(_pad(ti.nbytes) for ti in group.values())
        infos = sum(len(n) + 40 for n in group)
        shards.append({"file": name, "bytes": (meta if i == 0 else 4096) + infos + data, "tensors": len(group)})
    return shards
