"""The throughput figures the resource plan turns into hours, each with where it comes from.

One table (``THROUGHPUT``). Measured figures come from ``benchmarks/bench_throughput.py`` (and the
job timings of ``benchmarks/bench_release_resources.py``) on the project's build machine: a shared
2-core AMD EPYC VM, so they are conservative per-core figures; a dedicated runner core is faster.
Figures marked "assumed" are not measured by hubbot (network, GPU) and say so on every plan.

Scaling rules (see ``docs/runners.md``): compute scales with threads (cores) and, for inference,
with the parameters multiplied per token; hashing, Python-side work and generation speed
(memory-bound) do not scale with cores.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    source: str


_BENCH = "benchmarks/bench_throughput.py, 2-core shared EPYC VM (load ~5)"
_RELEASE = "benchmarks/bench_release_resources.py, Gemma 3 270M jobs on the same VM"

# llama.cpp's row quantizer, million elements per second per thread, rows of 5,376 with an
# importance matrix (ggml_quantize_chunk, the code llama_model_quantize runs).
QUANTIZE_M_ELEMENTS = {
    "Q8_0": 36.7, "Q6_K": 6.1, "Q5_K": 1.3, "Q4_K": 1.5, "Q5_0": 8.2, "Q4_0": 6.0, "Q5_1": 8.2, "Q4_1": 6.0,
    "Q3_K": 5.8, "Q2_K": 1.3, "IQ4_XS": 0.7, "IQ4_NL": 0.9, "IQ3_S": 0.6, "IQ3_XXS": 0.4, "IQ2_S": 0.8,
    "IQ2_XS": 0.3, "IQ2_XXS": 0.4, "IQ1_M": 1.2, "IQ1_S": 1.1, "TQ1_0": 1.0, "TQ2_0": 1.0,
    "F16": 73.8, "BF16": 353.7, "F32": 353.7,
}

THROUGHPUT: dict[str, Figure] = {
    "bf16_to_f32": Figure(41.2e6, "elements/s/thread", f"{_BENCH}: ggml_bf16_to_fp32_row, the expansion before quantizing"),
    "sha256": Figure(402e6, "bytes/s", f"{_BENCH}: hashlib sha256, one thread"),
    "copy": Figure(250e6, "bytes/s", f"{_RELEASE}: BF16 -> BF16 build (read, write, no conversion)"),
    "dequantize_numpy": Figure(20e6, "elements/s", f"{_RELEASE}: gguf.quants dequantize + BF16 re-encode of the 270M package"),
    "convert_safetensors": Figure(150e6, "bytes/s", "assumed: llama.cpp's converter on a BF16 checkpoint, disk-bound"),
    # Parameters multiplied per token x tokens per second per thread (perplexity pass, 4 sequences of 512).
    "ppl_BF16": Figure(1.6e9, "param.tok/s/thread", f"{_BENCH}: hubbot perplexity on Gemma 3 270M BF16"),
    "ppl_F16": Figure(1.6e9, "param.tok/s/thread", f"{_BENCH}: hubbot perplexity on Gemma 3 270M F16"),
    "ppl_Q8_0": Figure(2.0e9, "param.tok/s/thread", f"{_BENCH}: hubbot perplexity on Gemma 3 270M Q8_0"),
    "ppl_K": Figure(1.8e9, "param.tok/s/thread", f"{_BENCH}: hubbot perplexity on Gemma 3 270M Q4_K_M"),
    "ppl_IQ": Figure(1.4e9, "param.tok/s/thread", f"{_BENCH}: hubbot perplexity on Gemma 3 270M IQ2_XXS"),
    "imatrix": Figure(1.2e9, "param.tok/s/thread", f"{_BENCH}: hubbot imatrix collection on Gemma 3 270M BF16"),
    "tg_bandwidth": Figure(5e9, "weight bytes/s", f"{_BENCH}: token generation (memory-bound, not scaled by cores)"),
    "network": Figure(100e6, "bytes/s", "assumed: Hub transfer rate from a GitHub-hosted runner"),
    "gpu_inference": Figure(4e13, "param.tok/s", "assumed: one 80 GB data-centre GPU, whole model offloaded "
                            "(~1,500 tok/s prompt processing for 27B)"),
}

# Memory a process holds besides the model (measured: max RSS after importing hubbot, llama_cpp and
# numpy, and the quantizer child's RSS on a dry run).
PROCESS_BASE = Figure(160e6, "bytes", f"{_BENCH}: hubbot process with llama_cpp and numpy imported")
QUANTIZER_BASE = Figure(75e6, "bytes", "measured: the quantizer child's peak RSS on a 27B stand-in dry run")
CONVERTER_VENV = Figure(1.2e9, "bytes", "measured: du of the converter venv (torch CPU + transformers)")
CONVERTER_BASE = Figure(1.0e9, "bytes", "assumed: the converter's Python with torch and transformers loaded")
# Fraction of the 262,144 16-bit log-prob codes per scored position that are non-zero (what the
# sparse reference store keeps).
REFERENCE_NONZERO = Figure(0.03, "of n_vocab", f"{_RELEASE}: the Gemma 3 270M reference store")
# Evaluation/calibration text: bytes per token (only used when benchmark.chunks is not set).
BYTES_PER_TOKEN = Figure(4.0, "bytes/token", "measured: examples/data texts with the Gemma 3 tokenizer")


def quantize_rate(type_name: str) -> float:
    """Elements per second per thread for quantizing into ``type_name`` (slowest family when unknown)."""
    return QUANTIZE_M_ELEMENTS.get(type_name.upper(), min(QUANTIZE_M_ELEMENTS.values())) * 1e6


def inference_rate(type_name: str) -> float:
    """Parameters x tokens per second per thread for a model whose main weight type is ``type_name``."""
    t = type_name.upper()
    key = {"BF16": "ppl_BF16", "F16": "ppl_F16", "F32": "ppl_F16", "Q8_0": "ppl_Q8_0"}.get(t)
    if key is None:
        key = "ppl_IQ" if t.startswith(("IQ", "TQ")) else "ppl_K"
    return THROUGHPUT[key].value


def table() -> list[dict]:
    """The figures as rows (for ``hubbot plan --json`` and the docs)."""
    rows = [{"name": k, "value": f.value, "unit": f.unit, "source": f.source} for k, f in THROUGHPUT.items()]
    rows.append({"name": "quantize", "value": dict(QUANTIZE_M_ELEMENTS), "unit": "million elements/s/thread",
                 "source": f"{_BENCH}: ggml_quantize_chunk, rows of 5376 with an imatrix"})
    for name, f in (("process_base", PROCESS_BASE), ("quantizer_base", QUANTIZER_BASE),
                    ("converter_venv", CONVERTER_VENV), ("converter_base", CONVERTER_BASE),
                    ("reference_nonzero", REFERENCE_NONZERO), ("bytes_per_token", BYTES_PER_TOKEN)):
        rows.append({"name": name, "value": f.value, "unit": f.unit, "source": f.source})
    return rows
