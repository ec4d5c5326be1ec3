"""ggml's own quantize and dequantize routines, called row by row from Python.

llama-cpp-python ships ggml's base library; ``ggml_quantize_chunk`` is the function llama.cpp's
quantizer calls for every tensor (with the same importance-matrix pointer), and the type traits'
``to_float`` is the dequantizer inference uses. Measuring a type's error through them gives the
error of the file llama.cpp would write, not of a re-implementation.
"""

from __future__ import annotations

import ctypes
import functools
import os

import gguf
import numpy as np


class _Traits(ctypes.Structure):
    # struct ggml_type_traits (ggml.h): only the fields up to to_float are read.
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    import llama_cpp

    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def type_id(name: str) -> int:
    return int(gguf.GGMLQuantizationType[name])


def block_size(name: str) -> int:
    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]][0]


def row_bytes(name: str, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` values in type ``name`` (ggml_row_size)."""
    return int(_lib().ggml_row_size(type_id(name), n_per_row))


def requires_imatrix(name: str) -> bool:
    return bool(_lib().ggml_quantize_requires_imatrix(type_id(name)))


@functools.lru_cache(maxsize=None)
def _to_float(name: str):
    traits = _lib().ggml_get_type_traits(type_id(name)).contents
    if not traits.to_float:
        raise ValueError(f"ggml has no dequantizer for {name}")
    return _TO_FLOAT(traits.to_float)


def prepare(name: str) -> None:
    """Build the type's lookup tables once (IQ grids); thread-safe in ggml, but slow the first time."""
    _lib().ggml_quantize_init(type_id(name))


def quantize_rows(name: str, rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """``rows`` (float32 [n, n_per_row]) in type ``name``: the bytes llama.cpp writes for them.

    The caller passes an importance matrix for the types that require one; a row length that is
    not a multiple of the block size is refused here (ggml would abort the process).
    """
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n, n_per_row = rows.shape
    if n_per_row % block_size(name):
        raise ValueError(f"rows of {n_per_row} do not fit {name} blocks of {block_size(name)}")
    if imatrix is None and requires_imatrix(name):
        raise ValueError(f"{name} needs an importance matrix")
    dst = np.empty(n * row_bytes(name, n_per_row), dtype=np.uint8)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    _lib().ggml_quantize_chunk(type_id(name), rows.ctypes.data, dst.ctypes.data, 0, n, n_per_row,
                               None if im is None else im.ctypes.data)
    return dst


def dequantize(name: str, data: np.ndarray, n_values: int) -> np.ndarray:
    """``n_values`` float32 values from bytes of type ``name`` (the type's ``to_float``)."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    out = np.empty(n_values, dtype=np.float32)
    _to_float(name)(data.ctypes.data, out.ctypes.data, n_values)
    return out


def roundtrip(name: str, rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """``rows`` quantized to ``name`` and dequantized back, as ggml does it."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return dequantize(name, quantize_rows(name, rows, imatrix), rows.size).reshape(rows.shape)
