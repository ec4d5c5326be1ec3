"""llama.cpp's own command-line tools, built from the llama.cpp that llama-cpp-python vendors.

Parity tests compare hubbot with llama.cpp's reference programs (``llama-perplexity``,
``llama-imatrix``). Those programs are not in the wheel, so they are built once from the
llama-cpp-python 0.3.36 source distribution (the very llama.cpp commit the wheel embeds) into
``$HUBBOT_TEST_CACHE/llama-tools`` (default ``~/.cache/hubbot-tests/llama-tools``) and reused by
every later session. A file lock keeps two test processes from building at the same time.

The build uses the same CPU flags as ``scripts/setup.sh`` uses for the wheel (native, AMX kernels
compiled out), so the tools compute with the same kernels as the embedded engine.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from filelock import FileLock

LLAMA_CPP_PYTHON = "0.3.36"
TOOLS = ("llama-perplexity", "llama-imatrix")


def tools_dir() -> Path:
    base = Path(os.environ.get("HUBBOT_TEST_CACHE", Path.home() / ".cache" / "hubbot-tests"))
    return base / "llama-tools" / LLAMA_CPP_PYTHON


def _run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")


def _fetch_sources(work: Path) -> Path:
    """The vendored llama.cpp tree from the llama-cpp-python sdist."""
    dl = work / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    archives = list(dl.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        _run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
              "--no-deps", "--no-binary", ":all:", "-d", str(dl)])
        archives = list(dl.glob("llama_cpp_python-*.tar.gz"))
    src_root = work / "src"
    if src_root.exists():
        shutil.rmtree(src_root)
    with tarfile.open(archives[0]) as tar:
        try:
            tar.extractall(src_root, filter="data")
        except TypeError:  # Python without extraction filters (before 3.10.12 / 3.11.4)
            tar.extractall(src_root)
    (top,) = [p for p in src_root.iterdir() if p.is_dir()]
    return top / "vendor" / "llama.cpp"


def _build(work: Path) -> None:
    llama_src = _fetch_sources(work)
    build = work / "build"
    flags = ""
    if platform.machine() == "x86_64":
        # As in scripts/setup.sh: some VMs advertise AMX but fault on it.
        flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    env = dict(os.environ, CFLAGS=f"{os.environ.get('CFLAGS', '')} {flags}".strip(),
               CXXFLAGS=f"{os.environ.get('CXXFLAGS', '')} {flags}".strip())
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(["cmake", "-S", str(llama_src), "-B", str(build), *generator,
          "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON",
          "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
          "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON"], env=env)
    jobs = str(max(1, min(2, os.cpu_count() or 1)))
    _run(["cmake", "--build", str(build), "--config", "Release", "-j", jobs, "--target", *TOOLS], env=env)
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in TOOLS:
        (found,) = [p for p in build.rglob(name) if p.is_file() and os.access(p, os.X_OK)]
        tmp = bin_dir / f".{name}.partial"
        shutil.copy2(found, tmp)
        os.replace(tmp, bin_dir / name)
    shutil.rmtree(work / "src", ignore_errors=True)
    shutil.rmtree(build, ignore_errors=True)


def llama_tool(name: str) -> Path:
    """Path of llama.cpp's ``name`` tool (e.g. 'llama-perplexity'), building the tools on first use."""
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}; built tools: {', '.join(TOOLS)}")
    work = tools_dir()
    work.mkdir(parents=True, exist_ok=True)
    target = work / "bin" / name
    if target.exists():
        return target
    with FileLock(str(work / "build.lock")):
        if not target.exists():  # another process may have built it while we waited
            _build(work)
    return target


if __name__ == "__main__":  # python tests/llamacpp_tools.py: build ahead of the tests
    for tool in TOOLS:
        print(llama_tool(tool))
