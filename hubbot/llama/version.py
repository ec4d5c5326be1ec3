"""The engine's identity: the versions that decide the bytes a build produces and the figures a bench
measures (llama-cpp-python, and the llama.cpp / ggml it vendors). Part of every content key."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os


@functools.lru_cache(maxsize=1)
def engine_version() -> dict[str, str]:
    """Versions that decide the bytes a build produces: llama-cpp-python, llama.cpp and ggml."""
    import llama_cpp

    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    out = {"llama_cpp_python": llama_cpp.__version__}
    for fn in ("ggml_commit", "ggml_version"):
        f = getattr(lib, fn, None)
        if f is not None:
            f.restype = ctypes.c_char_p
            out[fn] = f().decode()
    with contextlib.suppress(Exception):
        out["llama_version"] = llama_cpp.llama_version().decode()
    return out
