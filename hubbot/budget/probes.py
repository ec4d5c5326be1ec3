"""Probe builds: quantize part of the model, measure its KL divergence against full precision.

The reference distributions of the full-precision source over the calibration text are stored
once (the benchmark's sparse 16-bit store); each probe is then one build by llama.cpp's quantizer
into the cache, one pass over the same chunks, and the file is deleted.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from hubbot.bench.quality import chunk_count, evaluate
from hubbot.bench.reference import ReferenceStore
from hubbot.budget.calibrate import Probe
from hubbot.config.recipes import TensorOverride
from hubbot.errors import BuildError
from hubbot.llama.quantize import QuantizeSpec, quantize
from hubbot.llama.session import LlamaModel
from hubbot.workdir import temp_path

log = logging.getLogger(__name__)


def probe_spec(types: dict[str, str], full_type: str, threads: int) -> QuantizeSpec:
    """Exactly ``types`` for the probed tensors, ``full_type`` for every other quantizable one.

    The file type only has to be a quantized one: llama.cpp ignores overrides otherwise.
    """
    overrides = [TensorOverride(f"^{re.escape(n)}$", t) for n, t in sorted(types.items())]
    overrides.append(TensorOverride(".*", full_type))
    return QuantizeSpec(file_type="Q8_0", overrides=tuple(overrides), threads=threads)


class ProbeRunner:
    """Builds and measures probes of one source on one text, sharing the reference pass."""

    def __init__(self, source: Path, text: bytes, folder: Path, imatrix: dict, full_type: str,
                 ctx: int, chunks: int, threads: int, gpu_layers: int = 0, base_type: str | None = None) -> None:
        self.source, self.text, self.folder = source, text, folder
        self.imatrix, self.full_type = imatrix, base_type or full_type
        # A base other than the source's own type has a KLD of its own, measured as a "baseline" probe.
        self.needs_baseline = self.full_type != full_type
        self.ctx, self.chunks, self.threads, self.gpu_layers = ctx, chunks, threads, gpu_layers
        self.store = ReferenceStore(folder / "reference")
        self._tokens = None

    def _tokens_of(self, model: LlamaModel):
        if self._tokens is None:
            self._tokens = model.tokenize(self.text)
        return self._tokens

    def _n_chunks(self, n_tokens: int) -> int:
        return chunk_count(n_tokens, self.ctx, self.chunks)

    def ensure_reference(self) -> None:
        if self.store.info:
            return
        log.info("computing the full-precision distributions of %s for the probes", self.source.name)
        with LlamaModel(self.source, self.gpu_layers) as model:
            tokens = self._tokens_of(model)
            evaluate(model, tokens, ctx=self.ctx, n_chunks=self._n_chunks(len(tokens)), n_seq=4,
                     threads=self.threads, write_reference=self.store.folder,
                     reference_info={"n_tokens": len(tokens), "tokens_sha256": ""})

    def measure(self, probe: Probe) -> dict:
        """Build the probe, measure mean KLD (and PPL) against the source, delete the file."""
        self.ensure_reference()
        path = self.folder / "probe.gguf"
        tmp = temp_path(path)
        try:
            report = quantize(self.source, tmp, probe_spec(probe.types, self.full_type, self.threads), self.imatrix)
            wrong = {t.name: t.type for t in report.tensors if t.name in probe.types and t.type != probe.types[t.name]}
            if wrong:  # the allocation's types must be what llama.cpp writes, probes included
                raise BuildError(f"probe {probe.name}: llama.cpp wrote other types than asked ({wrong}); "
                                 "this is a bug in recipe: auto, please report it")
            with LlamaModel(tmp, self.gpu_layers) as model:
                tokens = self._tokens_of(model)
                n = self._n_chunks(len(tokens))
                acc = evaluate(model, tokens, ctx=self.ctx, n_chunks=n, n_seq=4, threads=self.threads,
                               reference=self.store.open())
            kld = acc.divergence("source")
            return {"kld": kld["mean"], "same_top": kld["same_top"], "ppl": acc.perplexity(n, self.ctx)["ppl"],
                    "build_seconds": round(report.seconds, 2)}
        finally:
            tmp.unlink(missing_ok=True)
