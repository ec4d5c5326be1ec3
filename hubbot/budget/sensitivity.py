"""Sensitivity of one source with one importance matrix: measured once, cached, reused by every budget.

Two cached layers under ``cache/budget/``:

- the error table (``<key>.errors.json``), keyed by the source's sha256, the importance matrix's
  sha256, the candidate types, the row sample and the engine version;
- the calibrated sensitivity (``<key>.sensitivity.json``): the table plus the fitted factors,
  keyed additionally by the calibration text and the probe settings. Probe results are saved one
  by one as they finish (``<key>.probes.json``), so an interrupted run resumes where it stopped.

With both cached, planning a new budget is a dry run plus the allocation: seconds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hubbot.budget import calibrate
from hubbot.budget.allocate import Option
from hubbot.budget.inventory import CANDIDATES, Inventory, build_inventory
from hubbot.budget.measure import TensorErrors, measure_errors
from hubbot.llama.quantize import QuantizeSpec, quantize
from hubbot.llama.version import engine_version
from hubbot.progress import bar
from hubbot.workdir import canonical_json, sha256_text, write_json_atomic

log = logging.getLogger(__name__)

METHOD = 1  # bump when a change to the measurement or the fit changes the numbers


@dataclass
class Sensitivity:
    """Predicted KLD of every (tensor, candidate type), with the evidence behind it."""

    key: str
    errors: dict[str, TensorErrors]
    coefficients: calibrate.Coefficients

    def cost(self, name: str, type_name: str) -> float:
        return self.coefficients.per_tensor[name] * self.errors[name].errors[type_name]

    def options(self, inv: Inventory) -> dict[str, list[Option]]:
        return {n: [Option(c, t.nbytes(c), self.cost(n, c)) for c in inv.candidates[n]]
                for n, t in inv.choices.items()}

    def to_json(self) -> dict:
        return {"key": self.key, "method": METHOD, "errors": [te.to_json() for te in self.errors.values()],
                "coefficients": self.coefficients.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "Sensitivity":
        errors = {e["name"]: TensorErrors.from_json(e) for e in d["errors"]}
        return cls(d["key"], errors, calibrate.Coefficients.from_json(d["coefficients"]))


def dry_run_inventory(source_path: Path, info, imatrix_names: set[str], scratch: Path,
                      types=CANDIDATES) -> Inventory:
    """The inventory from a Q8_0 dry run of llama.cpp's quantizer (which tensors it quantizes);
    ``imatrix_names``: the tensors the importance matrix has values for."""
    report = quantize(source_path, scratch, QuantizeSpec(file_type="Q8_0"), None, dry_run=True)
    return build_inventory(info, {t.name: t.type for t in report.tensors}, set(imatrix_names), types)


def table_key(source_sha: str, imatrix_sha: str, inv: Inventory, sample: int) -> str:
    return sha256_text(canonical_json({
        "source": source_sha, "imatrix": imatrix_sha, "candidates": inv.candidates, "sample": sample,
        "engine": engine_version(), "method": METHOD}))


def calibration_key(table: str, text_sha: str, ctx: int, chunks: int, bands: int, base: str | None) -> str:
    """``base``: the probes' base type when it is not the source's own (None otherwise)."""
    return sha256_text(canonical_json({
        "table": table, "text": text_sha, "ctx": ctx, "chunks": chunks, "probe_error": calibrate.PROBE_ERROR,
        "bands": bands, "probe_types": calibrate.PROBE_TYPES, **({"base": base} if base else {})}))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def error_table(folder: Path, key: str, source_path: Path, inv: Inventory, imatrix: dict | None,
                threads: int, sample: int) -> dict[str, TensorErrors]:
    path = folder / f"{key[:24]}.errors.json"
    if (cached := _read(path)) and cached.get("key") == key:
        return {e["name"]: TensorErrors.from_json(e) for e in cached["errors"]}
    log.info("measuring the quantization error of %d tensors x their candidate types", len(inv.choices))
    errors = measure_errors(source_path, inv.candidates, imatrix, threads, sample)
    write_json_atomic(path, {"key": key, "errors": [te.to_json() for te in errors.values()]})
    return errors


def run_probes(folder: Path, key: str, errors: dict[str, TensorErrors], n_blocks: int, bands: int,
               runner) -> list[calibrate.Probe]:
    """Every probe of the design, measured (results saved as they come, so a rerun resumes)."""
    probes = calibrate.design(errors, n_blocks, bands)
    if runner.needs_baseline:  # a quantized base: its own KLD is measured once and taken off every probe
        probes.insert(0, calibrate.Probe("baseline", {}))
    path = folder / f"{key[:24]}.probes.json"
    done = (_read(path) or {}).get("probes", {}) if (_read(path) or {}).get("key") == key else {}
    with bar(len(probes), "probes", unit="build") as pbar:
        for p in probes:
            tag = sha256_text(canonical_json(p.types))
            if done.get(p.name, {}).get("tag") != tag:
                log.info("probe %s: %d tensors", p.name, len(p.types))
                done[p.name] = {"tag": tag, **runner.measure(p)}
                write_json_atomic(path, {"key": key, "probes": done})
            p.kld = done[p.name]["kld"]
            pbar.update(1)
    if runner.needs_baseline:
        base = probes.pop(0).kld or 0.0
        for p in probes:
            p.kld = max(0.0, (p.kld or 0.0) - base)
    return probes


def load_sensitivity(folder: Path, key: str) -> Sensitivity | None:
    d = _read(folder / f"{key[:24]}.sensitivity.json")
    return Sensitivity.from_json(d) if d and d.get("key") == key and d.get("method") == METHOD else None


def save_sensitivity(folder: Path, s: Sensitivity) -> None:
    write_json_atomic(folder / f"{s.key[:24]}.sensitivity.json", s.to_json())
