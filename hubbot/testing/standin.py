"""Shape-exact stand-ins for big models: a real GGUF header over a sparse, all-zero data section.

``write_standin`` writes the tensor inventory llama.cpp's converter writes for a Gemma 3 text model
(names, per-tensor shapes and types, gemma3 metadata) and extends the file to its full size with
``truncate``: the data section is a hole that takes no disk. llama.cpp's loader, its dry-run
quantizer and hubbot's header reader accept the file without reading a byte of tensor data, so
``hubbot plan`` can work out the exact sizes, shard layout and resource needs of the 27B release
on any machine. The weights read as zeros: the stand-in is for planning, not for running.

Its sibling ``hubbot.source.standin`` makes the same kind of file from a *real* source's header
(read over HTTP ranges) for ``hubbot card --preview``; this one needs no source at all, only the
shape, which is what tests and the runner-sizing docs need for a 27B model nobody downloads here.

    python -m hubbot.testing.standin OUT.gguf [--tokenizer-from GEMMA3.gguf]
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

# Tokenizer keys copied from a donor GGUF (every Gemma 3 size shares one 262,144-token vocabulary).
_TOKENIZER_PREFIX = "tokenizer."


@dataclass(frozen=True)
class Gemma3Shape:
    """The hyper-parameters that decide a Gemma 3 text model's tensor inventory."""

    n_layer: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_head: int
    n_head_kv: int
    head_dim: int
    context_length: int
    sliding_window: int
    rope_scaling_factor: float | None
    size_label: str


# google/gemma-3-27b-it text config (MedGemma 27B text-it shares it): 62 blocks, hidden 5376,
# feed-forward 21504, 32 query / 16 KV heads of 128; the converter cuts the embedding to the
# tokenizer's 262,144 entries and ties the output to it.
GEMMA3_27B = Gemma3Shape(n_layer=62, n_embd=5376, n_ff=21504, n_vocab=262144, n_head=32, n_head_kv=16,
                         head_dim=128, context_length=131072, sliding_window=1024, rope_scaling_factor=8.0,
                         size_label="27B")

# Per block, in the order llama.cpp-written Gemma 3 GGUFs list them (name order within a block).
_BLOCK_ROLES = ("attn_k", "attn_k_norm", "attn_norm", "attn_output", "attn_q", "attn_q_norm", "attn_v",
                "ffn_down", "ffn_gate", "ffn_norm", "ffn_up", "post_attention_norm", "post_ffw_norm")


def gemma3_inventory(s: Gemma3Shape) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, ggml shape ne0..neN, type)`` of every tensor, in file order: 2-D weights BF16, norms F32."""
    q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    shapes = {
        "attn_k": (s.n_embd, kv), "attn_k_norm": (s.head_dim,), "attn_norm": (s.n_embd,),
        "attn_output": (q, s.n_embd), "attn_q": (s.n_embd, q), "attn_q_norm": (s.head_dim,),
        "attn_v": (s.n_embd, kv), "ffn_down": (s.n_ff, s.n_embd), "ffn_gate": (s.n_embd, s.n_ff),
        "ffn_norm": (s.n_embd,), "ffn_up": (s.n_embd, s.n_ff), "post_attention_norm": (s.n_embd,),
        "post_ffw_norm": (s.n_embd,),
    }
    out: list[tuple[str, tuple[int, ...], str]] = [
        ("output_norm.weight", (s.n_embd,), "F32"),
        ("token_embd.weight", (s.n_embd, s.n_vocab), "BF16"),
    ]
    for b in range(s.n_layer):
        for role in _BLOCK_ROLES:
            shape = shapes[role]
            out.append((f"blk.{b}.{role}.weight", shape, "BF16" if len(shape) == 2 else "F32"))
    return out


def _metadata(w: gguf.GGUFWriter, s: Gemma3Shape, name: str) -> None:
    """The general.* and gemma3.* keys the converter writes for a Gemma 3 text model."""
    w.add_type("model")
    w.add_name(name)
    w.add_basename(name.split(" ")[0].lower())
    w.add_size_label(s.size_label)
    w.add_tags(["gemma3", "text-generation", "stand-in"])
    w.add_context_length(s.context_length)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_sliding_window(s.sliding_window)
    if s.rope_scaling_factor:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(s.rope_scaling_factor)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _synthetic_tokenizer(w: gguf.GGUFWriter, n_vocab: int) -> None:
    """A Gemma-like sentencepiece vocabulary: specials, 256 byte tokens, then placeholder pieces."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]"]
    tokens = specials + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"\u2581piece{i}" for i in range(n_vocab - len(tokens))]
    types = [3] * len(specials) + [6] * 256 + [1] * (n_vocab - len(specials) - 256)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


def _copy_tokenizer(w: gguf.GGUFWriter, donor: Path, n_vocab: int) -> None:
    from hubbot.gguf_io.info import open_reader  # the fast header parser: a 262k vocabulary in ~0.3 s

    reader = open_reader(donor)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens.data) != n_vocab:
        have = len(tokens.data) if tokens is not None else 0
        raise ValueError(f"{donor} has {have} tokens, not {n_vocab}; use a Gemma 3 GGUF as tokenizer donor")
    for key, fld in reader.fields.items():
        if key.startswith(_TOKENIZER_PREFIX):
            vtype = fld.types[0]
            sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, fld.contents(), vtype, sub_type=sub)


def write_standin(path: Path, shape: Gemma3Shape = GEMMA3_27B, *, tokenizer_from: Path | None = None,
                  name: str = "Medgemma 27b Text It") -> Path:
    """Write the stand-in GGUF at ``path``: full apparent size, data section sparse (zeros).

    ``tokenizer_from``: a GGUF whose ``tokenizer.*`` keys are copied (any Gemma 3 GGUF carries the
    real vocabulary); without it a synthetic vocabulary of the same size is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    w = gguf.GGUFWriter(tmp, "gemma3")
    _metadata(w, shape, name)
    if tokenizer_from is not None:
        _copy_tokenizer(w, Path(tokenizer_from), shape.n_vocab)
    else:
        _synthetic_tokenizer(w, shape.n_vocab)
    data_bytes = 0
    for tname, ne, ttype in gemma3_inventory(shape):
        qtype = gguf.GGMLQuantizationType[ttype]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(ne)) // block * size
        # gguf takes numpy order (ne reversed); byte shapes with uint8 tell it the raw type.
        byte_shape = (*reversed(ne[1:]), ne[0] // block * size)
        w.add_tensor_info(tname, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
        data_bytes += gguf.GGUFWriter.ggml_pad(nbytes, w.data_alignment)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        assert w.fout is not None
        header_end = w.fout[0].tell()
        w.close()
        # The data section starts at the next alignment boundary; truncate() extends the file
        # with a hole, so the 54 GB of tensor data cost no disk and no write.
        os.truncate(tmp, gguf.GGUFWriter.ggml_pad(header_end, w.data_alignment) + data_bytes)
        os.replace(tmp, path)
    finally:
        w.close()
        tmp.unlink(missing_ok=True)
    return path


def disk_usage(path: Path) -> int:
    """Bytes the file really occupies on disk (allocated blocks), as opposed to its apparent size."""
    return os.stat(path).st_blocks * 512


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a shape-exact, sparse Gemma 3 27B stand-in GGUF.")
    ap.add_argument("out", type=Path)
    ap.add_argument("--tokenizer-from", type=Path, default=None, help="copy tokenizer.* keys from this Gemma 3 GGUF")
    args = ap.parse_args(argv)
    path = write_standin(args.out, tokenizer_from=args.tokenizer_from)
    print(f"{path}: {path.stat().st_size:,} bytes apparent, {disk_usage(path):,} bytes on disk")


if __name__ == "__main__":
    main()
