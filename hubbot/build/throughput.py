"""The throughput figures the resource plan turns into hours, each with where it comes from.

One table (``THROUGHPUT``). Measured figures come from ``benchmarks/bench_throughput.py`` (and the
job timings of ``benchmarks/bench_release_resources.py``) on the project's build machine: a shared
2-core AMD EPYC VM.
Figures marked "assumed" are not measured by hubbot (network, GPU) and say so on every plan.
The benchmark measures CPU time of one thread, not wall time, so other work on the shared machine
does not slow the figures down; it cannot make a busy memory bus faster, so they stay conservative.

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


_BENCH = "benchmarks/bench_throughput.py, per CPU-second of one thread, AMD EPYC VM"
_RELEASE = "benchmarks/bench_release_resources.py, Gemma 3 270M jobs on the same VM"

# llama.cpp's row quantizer, million elements per CPU-second of one thread, rows of 5,376 with an
# importance matrix (ggml_quantize_chunk, the code llama_model_quantize runs). Q4_1/Q5_1 and the
# ternary types are not measured: they take their nearest measured neighbour.
QUANTIZE_M_ELEMENTS = {
    "Q8_0": 228.7, "Q6_K": 20.8, "Q5_K": 4.5, "Q4_K": 4.5, "Q5_0": 23.4, "Q4_0": 23.7, "Q5_1": 23.4,
    "Q4_1": 23.7, "Q3_K": 19.5, "Q2_K": 4.4, "IQ4_XS": 2.3, "IQ4_NL": 2.6, "IQ3_S": 1.9, "IQ3_XXS": 1.3,
    "IQ2_S": 2.9, "IQ2_XS": 0.8, "IQ2_XXS": 1.5, "IQ1_M": 3.7, "IQ1_S": 3.1, "TQ1_0": 3.1, "TQ2_0": 3.1,
    "F16": 340.2, "BF16": 1390.5, "F32": 1390.5,
}

THROUGHPUT: dict[str, Figure] = {
    "bf16_to_f32": Figure(2002e6, "elements/s/thread", f"{_BENCH}: ggml_bf16_to_fp32_row, the expansion before quantizing"),
    "sha256": Figure(1403e6, "bytes/s", f"{_BENCH}: hashlib sha256, one thread"),
    "copy": Figure(100e6, "bytes/s", f"{_RELEASE}: BF16 -> BF16 build, bytes read + written (543 MB in 5-15 s)"),
    "dequantize_numpy": Figure(20e6, "elements/s", f"{_RELEASE}: convert job, gguf.quants Q4_K -> BF16 of the 270M package"),
    "convert_safetensors": Figure(150e6, "bytes/s", "assumed: llama.cpp's converter on a BF16 checkpoint, disk-bound"),
    # Parameters multiplied per token x tokens, per CPU-second of one thread: perplexity passes (4
    # sequences of 512, scoring included) and hubbot's importance-matrix pass (blocks only).
    "ppl_BF16": Figure(23.1e9, "param.tok/cpu-s", f"{_BENCH}: hubbot perplexity on Gemma 3 270M BF16"),
    "ppl_F16": Figure(29.5e9, "param.tok/cpu-s", f"{_BENCH}: hubbot perplexity on Gemma 3 270M F16"),
    "ppl_Q8_0": Figure(24.0e9, "param.tok/cpu-s", f"{_BENCH}: hubbot perplexity on Gemma 3 270M Q8_0"),
    "ppl_K": Figure(23.6e9, "param.tok/cpu-s", f"{_BENCH}: hubbot perplexity on Gemma 3 270M Q4_K_M"),
    "ppl_IQ": Figure(25.4e9, "param.tok/cpu-s", f"{_BENCH}: hubbot perplexity on Gemma 3 270M IQ2_XXS"),
    "imatrix": Figure(9.87e9, "param.tok/cpu-s", f"{_BENCH}: hubbot imatrix collection on Gemma 3 270M BF16"),
    "tg_bandwidth": Figure(7.1e9, "weight bytes/cpu-s", f"{_BENCH}: generation on Gemma 3 270M BF16, one thread"),
    "gpu_bandwidth": Figure(1.5e12, "weight bytes/s", "assumed: the same GPU's memory bandwidth (HBM) in generation"),
    "network": Figure(100e6, "bytes/s", "assumed: Hub transfer rate from a GitHub-hosted runner"),
    "gpu_inference": Figure(4e13, "param.tok/s", "assumed: one 80 GB data-centre GPU, whole model offloaded "
                            "(~1,500 tok/s prompt processing for 27B)"),
}

# Generation is memory-bound: more threads read faster only until the memory bus is full.
TG_THREADS_CAP = Figure(8, "threads", "assumed: generation stops scaling at 8 threads' worth of bandwidth (~57 GB/s)")

# Memory a process holds besides the model (measured: max RSS after importing hubbot, llama_cpp and
# numpy, and the quantizer child's RSS on a dry run).
PROCESS_BASE = Figure(160e6, "bytes", f"{_BENCH}: hubbot process with llama_cpp and numpy imported")
QUANTIZER_BASE = Figure(75e6, "bytes", "measured: the quantizer child's peak RSS on a 27B stand-in dry run")
CONVERTER_VENV = Figure(1.2e9, "bytes", "measured: du of the converter venv (torch CPU + transformers)")
CONVERTER_BASE = Figure(1.0e9, "bytes", "assumed: the converter's Python with torch and transformers loaded")
CARD_PROCESS = Figure(80e6, "bytes", f"{_RELEASE}: card job (no engine loaded), 70 MB")
# Expanding a quantized tensor with gguf.quants holds float32 values, their copy and the BF16
# re-encoding's temporaries at once.
DEQUANTIZE_BYTES = Figure(13.0, "bytes/element", f"{_RELEASE}: convert job peak RSS over its largest tensor")
# Non-zero 16-bit log-prob codes per scored position (what the sparse reference store keeps: the
# entries within 16 nats of the top logit). How many fall in that window depends on how peaked the
# model's distributions are, not on the vocabulary's size; a model with a small vocabulary, or an
# untrained one (flat logits), keeps every entry, so the plan takes at most n_vocab.
REFERENCE_NONZERO = Figure(8907, "entries/row", f"{_RELEASE}: Gemma 3 270M reference store, 8,907 of 262,144 per row")
# Evaluation/calibration text: bytes per token (only used when benchmark.chunks is not set).
BYTES_PER_TOKEN = Figure(4.13, "bytes/token", "measured: examples/data/evaluation.txt, 13,596 Gemma 3 tokens")


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
                    ("card_process", CARD_PROCESS), ("dequantize_bytes", DEQUANTIZE_BYTES),
                    ("reference_nonzero", REFERENCE_NONZERO), ("bytes_per_token", BYTES_PER_TOKEN),
                    ("tg_threads_cap", TG_THREADS_CAP)):
        rows.append({"name": name, "value": f.value, "unit": f.unit, "source": f.source})
    return rows
