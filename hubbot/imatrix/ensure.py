"""Importance matrices for the build: load a given one, or compute and cache one, then check it.

``ensure_imatrix`` is what ``build`` and ``plan`` call. The matrix is either the file the
config names (``imatrix.file``, GGUF or legacy ``.dat``) or computed from
``imatrix.calibration`` and cached under ``cache/imatrix/`` by a key made of the source's
sha256, the calibration text's sha256, the settings that change the numbers (ctx, chunks)
and the engine version. Either way it is checked against the model before anything is
quantized, copied into ``out/`` as ``<model>.imatrix.gguf`` and recorded in the manifest so
it is published next to the variants.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hubbot.config import Config, TextFile
from hubbot.errors import ImatrixError
from hubbot.gguf_io.info import GGUFInfo
from hubbot.imatrix.io import ImatrixData, read_imatrix, write_gguf
from hubbot.imatrix.ref import ImatrixRef
from hubbot.llama.collect import CollectSettings, collect_isolated
from hubbot.llama.version import engine_version
from hubbot.manifest import Engine, ManifestEntry
from hubbot.progress import bar
from hubbot.source.resolve import ResolvedSource
from hubbot.workdir import WorkDir, atomic_path, canonical_json, sha256_file, sha256_text, write_json_atomic

log = logging.getLogger(__name__)

# Bump when the collection method changes the numbers, so old caches are not reused.
METHOD_VERSION = 1
_BLOCK_WEIGHT = re.compile(r"^blk\.\d+\.(\w+)\.weight$")
# 2-D block tensors that are not multiplied as matrices (convolutions, state-space parameters):
# llama.cpp's collector never sees them, so they are not expected in an imatrix.
_NOT_MATMUL = re.compile(r"(ssm_conv1d|ssm_a|ssm_d|ssm_dt|_norm|conv1d|time_mix_|channel_mix_lerp)")


@dataclass
class CalibrationText:
    text: str
    sha256: str
    name: str
    path: Path


def read_text_file(cfg: Config, tf: TextFile, what: str = "calibration text") -> CalibrationText:
    """A TextFile's contents: local (relative to the config) or downloaded from the Hub."""
    if tf.path:
        path = cfg.resolve_path(tf.path)
        if not path.is_file():
            raise ImatrixError(f"{what} {path} not found; check imatrix.calibration.path")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError

        try:
            path = Path(hf_hub_download(repo_id=tf.repo, filename=tf.file, repo_type=tf.repo_type,
                                        revision=tf.revision))
        except HfHubHTTPError as exc:
            raise ImatrixError(f"could not download {what} {tf.repo}/{tf.file} ({exc.__class__.__name__}); "
                               "check the repo, file and your access") from None
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ImatrixError(f"{what} {path} is not UTF-8 text") from None
    if not text.strip():
        raise ImatrixError(f"{what} {path} is empty; point imatrix.calibration at real prose")
    return CalibrationText(text, sha256_text(raw), tf.display_name, path)


def expected_matrices(info: GGUFInfo) -> dict[str, int]:
    """blk.* matmul weights of a model -> the imatrix length llama.cpp wants (ne0 * n_expert)."""
    out = {}
    for t in info.tensors:
        m = _BLOCK_WEIGHT.match(t.name)
        if not m or len(t.shape) < 2 or _NOT_MATMUL.search(m.group(1)):
            continue
        n_expert = t.shape[2] if len(t.shape) > 2 else 1
        out[t.name] = int(t.shape[0]) * int(n_expert)
    return out


def validate(data: ImatrixData, info: GGUFInfo, label: str) -> None:
    """ImatrixError (one line) unless ``data`` fits the model: every matmul weight present with
    the right length, nothing from another model, only finite non-negative values."""
    expected = expected_matrices(info)
    values = data.values()
    foreign = sorted(n for n in values if n not in expected)
    missing = sorted(n for n in expected if n not in values)
    if foreign:
        raise ImatrixError(
            f"{label} has {len(foreign)} matrices {info.path.name} does not have (e.g. {foreign[0]}); "
            "it was made for another model: recompute it for this source")
    for name, v in values.items():
        if v.size != expected[name]:
            raise ImatrixError(f"{label}: {name} has {v.size} values but the model needs {expected[name]}; "
                               "it was made for another model: recompute it for this source")
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ImatrixError(f"{label}: {name} holds non-finite or negative values; recompute the importance matrix")
    if missing:
        raise ImatrixError(
            f"{label} lacks {len(missing)} of the model's {len(expected)} weight matrices (e.g. {missing[0]}); "
            "recompute it with more calibration text or for this model")


def cache_key(source: ResolvedSource, calib: CalibrationText, ctx: int, chunks: int | None) -> str:
    return sha256_text(canonical_json({
        "source": source.sha256, "text": calib.sha256, "ctx": ctx, "chunks": chunks,
        "engine": engine_version(), "method": METHOD_VERSION,
    }))


def out_name(cfg: Config) -> str:
    return f"{cfg.model_name}.imatrix.gguf"


def compute_matrix(model: Path, calib: CalibrationText, ctx: int, chunks: int | None, threads: int,
            gpu_layers: int = 0) -> ImatrixData:
    """Collect a matrix from ``calib`` (in a child process), with a progress bar in tokens."""
    settings = CollectSettings(ctx=ctx, chunks=chunks, threads=threads, gpu_layers=gpu_layers)
    with bar(None, "imatrix", unit="tok") as pbar:
        return collect_isolated(model, calib.text, settings, calib.name, on_tokens=pbar.update)


def _publish(cfg: Config, work: WorkDir, src_file: Path, data: ImatrixData, key: str, calib_name: str,
             source: ResolvedSource, ctx: int | None) -> ImatrixRef:
    """Copy the matrix into out/, record it in the manifest, and make the ref the build uses."""
    name = out_name(cfg)
    final = work.output(name)
    entry = work.manifest.get(name)
    if not (entry and entry.input_key == key and final.is_file() and entry.is_fresh(final)):
        with atomic_path(final) as tmp:
            shutil.copyfile(src_file, tmp)
        st = final.stat()
        entry = ManifestEntry(
            kind="imatrix", file=name, sha256=sha256_file(final), size=st.st_size,
            mtime_ns=st.st_mtime_ns, input_key=key,
            dataset=data.datasets[0] if data.datasets else calib_name, datasets=data.datasets,
            calibration=calib_name, chunks=data.chunk_count, ctx=ctx or data.chunk_size,
            entries=len(data), engine=Engine.from_json(engine_version()), source=source.record(),
        )
        work.manifest.put(name, entry)
    assert entry.sha256 is not None
    return ImatrixRef(path=final, sha256=entry.sha256, dataset=calib_name, chunks=data.chunk_count,
                      entries=len(data), values=data.values())


def _from_file(cfg: Config, source: ResolvedSource, work: WorkDir) -> ImatrixRef:
    assert cfg.imatrix.file and source.info is not None
    path = cfg.resolve_path(cfg.imatrix.file)
    data = read_imatrix(path)
    validate(data, source.info, str(path))
    sha = sha256_file(path)
    key = sha256_text(canonical_json({"file": sha, "source": source.sha256}))
    label = data.datasets[0] if data.datasets else path.name
    if cfg.imatrix.calibration is not None:
        label = cfg.imatrix.calibration.display_name
    publish_from = path
    if path.read_bytes()[:4] != b"GGUF":
        # A legacy .dat is published in the current format, like llama-imatrix --output-format gguf.
        publish_from = work.cache / "imatrix" / f"{sha[:16]}.imatrix.gguf"
        if not publish_from.is_file():
            write_gguf(data, publish_from)
    return _publish(cfg, work, publish_from, data, key, label, source, None)


def ensure_imatrix(cfg: Config, source: ResolvedSource, work: WorkDir, threads: int,
                   compute: bool = True, *, ctx: int | None = None, chunks: int | None = None,
                   force: bool = False) -> ImatrixRef | None:
    """The importance matrix for this source, validated and published into ``out/``.

    ``imatrix.file`` is loaded as given. Otherwise the matrix computed from
    ``imatrix.calibration`` is returned from the cache, or computed when ``compute`` is true
    (``compute=False`` returns None when nothing is cached: ``plan`` never computes).
    ``ctx``/``chunks`` override the config; ``force`` recomputes even when cached.
    Returns None when the config has neither a file nor a calibration text.
    """
    if cfg.imatrix.file:
        return _from_file(cfg, source, work)
    if cfg.imatrix.calibration is None:
        return None
    assert source.info is not None
    n_ctx = ctx or cfg.imatrix.ctx
    n_chunks = chunks or cfg.imatrix.chunks
    calib = read_text_file(cfg, cfg.imatrix.calibration)
    key = cache_key(source, calib, n_ctx, n_chunks)
    cached = work.cache / "imatrix" / f"{key[:24]}.imatrix.gguf"
    if force or not cached.is_file():
        if not compute:
            return None
        log.info("computing the importance matrix from %s (%s chunks of %d tokens)", calib.name,
                 n_chunks or "all", n_ctx)
        data = compute_matrix(source.path, calib, n_ctx, n_chunks, cfg.imatrix.threads or threads,
                                    cfg.imatrix.gpu_layers)
        validate(data, source.info, "the computed importance matrix")
        write_gguf(data, cached)
        write_json_atomic(cached.with_suffix(".json"), {
            "key": key, "source": source.sha256, "calibration": calib.name, "text_sha256": calib.sha256,
            "ctx": n_ctx, "chunks": n_chunks, "engine": engine_version(), "method": METHOD_VERSION})
    else:
        log.info("using the cached importance matrix %s", cached.name)
        data = read_imatrix(cached)
        validate(data, source.info, str(cached))
    return _publish(cfg, work, cached, data, key, calib.name, source, n_ctx)


def describe(ref: ImatrixRef, work: WorkDir) -> dict[str, Any]:
    """The manifest entry of the published matrix (for ``hubbot imatrix --json``)."""
    entry = work.manifest.get(ref.path.name)
    return {**(entry.without("mtime_ns").to_json() if entry else {}), "path": str(ref.path)}
