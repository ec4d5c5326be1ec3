"""The embedded quantizer against llama.cpp's own raw binding, on the real Gemma 3 270M."""

from __future__ import annotations

import ctypes
import re

import llama_cpp
import numpy as np
import pytest

from hubbot.config import recipes
from hubbot.errors import BuildError
from hubbot.gguf_io.info import open_reader, read_info
from hubbot.llama.quantize import QuantizeSpec, quantize
from hubbot.llama.version import engine_version


def raw_quantize(src, dst, ftype: str, nthread: int = 2) -> None:
    """The plain llama-cpp-python call, exactly as a user would write it."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = nthread
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


def tensor_payloads(path) -> dict[str, tuple[str, bytes]]:
    reader = open_reader(path)
    return {t.name: (t.tensor_type.name, bytes(t.data.tobytes())) for t in reader.tensors}


@pytest.mark.slow
@pytest.mark.parametrize("ftype", ["Q4_K_M", "IQ4_XS"])
def test_tensor_data_is_byte_identical_to_the_raw_binding(tmp_path, gemma_bf16, ftype):
    ours, raw = tmp_path / "ours.gguf", tmp_path / "raw.gguf"
    spec = QuantizeSpec(ftype, threads=2, metadata=(("general.quantized_by", "hubbot-test"),))
    report = quantize(gemma_bf16, ours, spec)
    raw_quantize(gemma_bf16, raw, ftype)
    a, b = tensor_payloads(ours), tensor_payloads(raw)
    assert list(a) == list(b)
    for name in a:
        assert a[name][0] == b[name][0], name
        assert a[name][1] == b[name][1], name
    # Our metadata went in, and the per-tensor report matches the file.
    info = read_info(ours)
    assert info.metadata["general.quantized_by"] == "hubbot-test"
    assert report.type_counts == info.type_counts
    assert len(report.fallbacks) > 0  # 640-column tensors cannot hold 256-wide blocks


@pytest.mark.slow
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_dry_run_predicts_the_built_types(tmp_path, gemma_bf16, with_imatrix):
    from hubbot.build.spec import placeholder_imatrix

    # With an imatrix llama.cpp logs a tensor's record over several lines: both must parse.
    imatrix = placeholder_imatrix(read_info(gemma_bf16)) if with_imatrix else None
    spec = QuantizeSpec("Q4_K_M", output_type="Q8_0", embeddings_type="Q8_0", threads=2)
    dry = quantize(gemma_bf16, tmp_path / "never.gguf", spec, imatrix, dry_run=True)
    assert not (tmp_path / "never.gguf").exists()
    real = quantize(gemma_bf16, tmp_path / "real.gguf", spec, imatrix)
    built = read_info(tmp_path / "real.gguf").tensor_types()
    assert {t.name: t.type for t in dry.tensors} == built
    assert {t.name: t.type for t in real.tensors} == built
    assert built["token_embd.weight"] == "Q8_0"
    # The 90 shape fallbacks of this model are reported, with the wanted and the actual type.
    assert len(dry.fallbacks) == 90
    assert dry.fallbacks["blk.0.attn_q.weight"] == "Q4_K->Q5_0"


def test_overrides_output_embeddings_and_metadata(tmp_path, tiny_gguf):
    spec = QuantizeSpec(
        "Q4_K_M", output_type="Q8_0", embeddings_type="Q6_K",
        overrides=(recipes.TensorOverride(r"^blk\.(0|3)\.ffn_down\.weight$", "IQ4_NL"),
                   recipes.TensorOverride(r"ffn_down", "Q5_K")),
        metadata=(("general.quantized_by", "me"), ("hubbot.flag", True), ("hubbot.n", 7), ("hubbot.x", 0.5)),
    )
    quantize(tiny_gguf, tmp_path / "o.gguf", spec)
    info = read_info(tmp_path / "o.gguf")
    types = info.tensor_types()
    assert types["output.weight"] == "Q8_0"
    assert types["token_embd.weight"] == "Q6_K"
    assert types["blk.0.ffn_down.weight"] == types["blk.3.ffn_down.weight"] == "IQ4_NL"
    assert types["blk.1.ffn_down.weight"] == types["blk.2.ffn_down.weight"] == "Q5_K"  # first match wins
    assert info.metadata["general.quantized_by"] == "me"
    assert info.metadata["hubbot.flag"] is True and info.metadata["hubbot.n"] == 7


def test_llama_cpp_refusals_become_one_line_errors(tmp_path, tiny_gguf):
    info = read_info(tiny_gguf)
    with pytest.raises(BuildError, match="requires an imatrix"):
        quantize(tiny_gguf, tmp_path / "a.gguf", QuantizeSpec("IQ2_XXS"))
    bad = {t.name: np.full(t.shape[0], np.nan, np.float32) for t in info.tensors if t.name.startswith("blk.") and len(t.shape) == 2}
    with pytest.raises(BuildError, match="non-finite"):
        quantize(tiny_gguf, tmp_path / "b.gguf", QuantizeSpec("IQ2_XXS"), bad)
    with pytest.raises(BuildError, match="longer than llama.cpp's 127-byte limit"):
        quantize(tiny_gguf, tmp_path / "c.gguf", QuantizeSpec("Q8_0", metadata=(("k", "x" * 200),)))


def test_an_abort_inside_the_c_library_becomes_an_error(tmp_path):
    """GGML_ASSERT calls abort(); the quantizer's child process dies, hubbot reports it and lives on.

    A real abort: an explicit embedding type whose 256-wide blocks do not divide the 320-wide rows
    (hubbot's own recipes fit such types first; the raw engine call does not).
    """
    from hubbot.testing.tinymodel import write_tiny_gguf

    src = write_tiny_gguf(tmp_path / "tiny320.gguf", n_embd=320, n_ff=640)
    with pytest.raises(BuildError) as err:
        quantize(src, tmp_path / "a.gguf", QuantizeSpec("Q8_0", embeddings_type="Q4_K"))
    message = str(err.value)
    assert "aborted" in message and "GGML_ASSERT" in message and "\n" not in message
    assert re.search(r"exit -6", message)
    assert not (tmp_path / "a.gguf").exists() or (tmp_path / "a.gguf").stat().st_size >= 0
    # The process that called it is fine: the next quantization works.
    quantize(src, tmp_path / "b.gguf", QuantizeSpec("Q8_0"))
    assert read_info(tmp_path / "b.gguf").type_counts["Q8_0"] > 0


def test_quantizing_after_in_process_inference_does_not_hang(tmp_path, tiny_gguf):
    """ggml's OpenMP threads from an earlier decode must not deadlock the quantizer's child
    (the IQ grids are initialised with `omp parallel`): run it in a fresh interpreter with a timeout."""
    import subprocess
    import sys

    script = (
        "import sys, llama_cpp\n"
        "from hubbot.llama.quantize import quantize, QuantizeSpec\n"
        "from hubbot.build.spec import placeholder_imatrix\n"
        "from hubbot.gguf_io.info import read_info\n"
        "if __name__ == '__main__':\n"
        "    src, out = sys.argv[1], sys.argv[2]\n"
        "    quantize(src, out + '.q8', QuantizeSpec('Q8_0'))\n"
        "    llm = llama_cpp.Llama(out + '.q8', n_ctx=64, n_threads=2, verbose=False)\n"
        "    llm('hello', max_tokens=4)\n"
        "    quantize(src, out, QuantizeSpec('IQ2_XXS'), placeholder_imatrix(read_info(src)))\n"
        "    print('ok')\n"
    )
    path = tmp_path / "run.py"
    path.write_text(script)
    run = subprocess.run([sys.executable, str(path), str(tiny_gguf), str(tmp_path / "o.gguf")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "ok"
    assert read_info(tmp_path / "o.gguf").type_counts.get("IQ2_XXS", 0) > 0


def test_engine_version_names_the_ggml_commit():
    v = engine_version()
    assert v["llama_cpp_python"] == llama_cpp.__version__
    assert re.match(r"^[0-9a-f]{7,}", v["ggml_commit"])
