"""The budget stage as plan and build use it: sensitivity once per run, then one choice per variant.

``AutoPlanner`` is created once per ``plan``/``build`` run. It reads (or, when allowed to, measures)
the sensitivity of the source with its importance matrix, and turns each ``recipe: auto`` variant's
budget into an allocation. With ``compute=False`` (``hubbot plan``) nothing slow runs: variants
whose sensitivity is not cached yet get no allocation and the plan says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hubbot.budget import calibrate
from hubbot.budget.choose import MARGIN_ABSOLUTE, MARGIN_LIKE, AutoChoice, changes, check_budget, choose, predict
from hubbot.budget.inventory import CANDIDATES, Inventory, Tensor
from hubbot.budget.probes import ProbeRunner
from hubbot.budget.sensitivity import (
    Sensitivity,
    calibration_key,
    dry_run_inventory,
    error_table,
    load_sensitivity,
    run_probes,
    save_sensitivity,
    table_key,
)
from hubbot.config import Config, VariantConfig, config_lines
from hubbot.gguf_io.header import added_kv_bytes
from hubbot.gguf_io.info import open_reader
from hubbot.imatrix.ref import ImatrixRef
from hubbot.llama.quantize import QuantizeSpec, quantize
from hubbot.source.resolve import ResolvedSource
from hubbot.workdir import WorkDir

log = logging.getLogger(__name__)


class AutoPlanner:
    def __init__(self, cfg: Config, source: ResolvedSource, work: WorkDir, imatrix: ImatrixRef | None,
                 threads: int, compute: bool) -> None:
        assert source.info is not None
        self.cfg, self.source, self.work, self.imatrix = cfg, source, work, imatrix
        self.threads, self.compute = threads, compute
        self.folder = work.cache / "budget"
        self._inventory: Inventory | None = None
        self._sensitivity: Sensitivity | None = None
        self._standard: dict[str, tuple[dict[str, str], int]] = {}
        self._header: int | None = None

    def _scratch(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / "dry-run.gguf"

    def inventory(self) -> Inventory:
        if self._inventory is None:
            if self.imatrix:
                covered = set(self.imatrix.values)
            else:
                # Not computed yet (a plan): llama.cpp's collector records every block weight, so
                # assume those, as the standard mixes' dry runs do; a budget is then checked against
                # what the real matrix will allow, not against a model without one.
                covered = {t.name for t in self.source.info.tensors if t.name.startswith("blk.")}
            types = tuple(self.cfg.sensitivity.types or CANDIDATES)
            self._inventory = dry_run_inventory(self.source.path, self.source.info, covered, self._scratch(), types)
        return self._inventory

    def sensitivity(self) -> Sensitivity | None:
        """The calibrated sensitivity: cached, or measured now when ``compute`` (None otherwise)."""
        if self._sensitivity is not None or self.imatrix is None:
            return self._sensitivity
        cfg, inv, opts = self.cfg, self.inventory(), self.cfg.sensitivity
        assert cfg.imatrix.calibration is not None  # load_config refuses auto variants without it
        from hubbot.imatrix.ensure import read_text_file

        calib = read_text_file(cfg, cfg.imatrix.calibration)
        tkey = table_key(self.source.sha256, self.imatrix.sha256, inv, opts.sample)
        full = next((t for t in ("BF16", "F16", "F32") if any(c.source_type == t for c in inv.choices.values())), "F16")
        ckey = calibration_key(tkey, calib.sha256, cfg.imatrix.ctx, opts.probe_chunks, opts.bands,
                               opts.probe_base if opts.probe_base not in (None, full) else None)
        self._sensitivity = load_sensitivity(self.folder, ckey)
        if self._sensitivity is not None or not self.compute:
            return self._sensitivity
        self.folder.mkdir(parents=True, exist_ok=True)
        errors = error_table(self.folder, tkey, self.source.path, inv, self.imatrix.values, self.threads, opts.sample)
        runner = ProbeRunner(self.source.path, calib.text.encode().removesuffix(b"\n"), self.folder / f"probes-{ckey[:16]}",
                             self.imatrix.values or {}, full, cfg.imatrix.ctx, opts.probe_chunks,
                             cfg.imatrix.threads or self.threads, cfg.imatrix.gpu_layers, opts.probe_base)
        probes = run_probes(self.folder, ckey, errors, self.source.info.block_count, opts.bands, runner)
        coeffs = calibrate.fit(errors, probes, self.source.info.block_count, opts.bands)
        self._sensitivity = Sensitivity(ckey, errors, coeffs)
        save_sensitivity(self.folder, self._sensitivity)
        return self._sensitivity

    def standard(self, file_type: str) -> tuple[dict[str, str], int]:
        """(tensor -> type, tensor bytes) of llama.cpp's own mix of ``file_type`` for this model."""
        if file_type not in self._standard:
            values = self.imatrix.values if self.imatrix else None
            if values is None:  # a dry run never reads the values, but IQ types insist they exist
                values = {n: np.ones(t.shape[0], dtype=np.float32) for n, t in self.inventory().choices.items()
                          if n.startswith("blk.")}
            report = quantize(self.source.path, self._scratch(), QuantizeSpec(file_type=file_type), values, dry_run=True)
            shapes = {t.name: t for t in self.source.info.tensors}
            types = {t.name: t.type for t in report.tensors}
            nbytes = sum(Tensor(n, tuple(shapes[n].shape), shapes[n].type).nbytes(t) for n, t in types.items())
            self._standard[file_type] = (types, nbytes)
        return self._standard[file_type]

    def header(self) -> int:
        """Bytes before the tensor data in the source: metadata and tensor infos, which the output copies."""
        if self._header is None:
            self._header = int(open_reader(self.source.path).data_offset)
        return self._header

    def budget(self, index: int, v: VariantConfig, metadata: list[tuple[str, object]] = ()) -> int:
        """The file size variant ``v`` may take, checked against what this model allows (ConfigError)."""
        assert v.budget is not None
        inv, header = self.inventory(), self.header() + added_kv_bytes(list(metadata))
        n_params = self.source.info.n_params
        like_bytes = self.standard(v.budget.like)[1] + header if v.budget.like else None
        wanted = v.budget.bytes_for(n_params, like_bytes)
        where = config_lines(self.cfg).where(("variants", index, "budget"))
        check_budget(where, v.name, v.budget, wanted, inv.smallest_bytes() + header, inv.largest_bytes() + header, n_params)
        return wanted

    def choose(self, index: int, v: VariantConfig, metadata: list[tuple[str, object]] = ()) -> AutoChoice | None:
        """The allocation for variant ``v`` (the ``index``-th), or None when its sensitivity is not measured yet.

        ``metadata``: the keys the build adds to the header. The output header is the source's plus
        those; a `like:` budget is the standard mix's file with that same header, so the auto file
        is never larger than the standard one, whatever hubbot writes into both.
        """
        inv, header = self.inventory(), self.header() + added_kv_bytes(list(metadata))
        std_types, std_bytes = self.standard(v.type)
        wanted = self.budget(index, v, metadata)
        sens = self.sensitivity()
        if sens is None:
            return None
        alloc = choose(inv, sens, wanted, header, MARGIN_LIKE if v.budget.like else MARGIN_ABSOLUTE)
        chosen = alloc.types()
        return AutoChoice(
            budget=wanted, budget_text=v.budget.describe(), size=alloc.bytes + inv.fixed_bytes + header,
            allocation=alloc, predicted_kld=alloc.cost,
            standard_types={n: std_types[n] for n in chosen if n in std_types},
            standard_kld=predict(sens, {n: std_types[n] for n in chosen if n in std_types}),
            changes=changes(inv, chosen, std_types))
