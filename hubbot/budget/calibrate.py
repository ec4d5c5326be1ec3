"""From quantization error to output degradation: probe builds and the fitted coefficients.

The error table says how much each type disturbs each tensor's output; how much that disturbance
moves the model's next-token distribution depends on where the tensor sits. hubbot measures it:

- a *role probe* quantizes one role (say every ffn_down, or the token embedding) and keeps every
  other tensor at full precision; a *band probe* does the same for the tensors of a few
  consecutive blocks. Each probe is a real build by llama.cpp's quantizer, and its mean KL
  divergence against the full-precision model is measured on the calibration text (never on the
  benchmark text, which stays held out for the card);
- the model is additive: KLD = sum over tensors of c_tensor * E_tensor(type), with
  c_tensor = a_role * s_band (one factor per role, one per band of blocks). The factors are fitted
  so each probe's predicted KLD equals its measured one (alternating updates of the two factor
  sets, a few hundred at most; tensors outside blocks get their own factor from their probe).

A probe quantizes each of its tensors to the candidate whose relative error is nearest to
``PROBE_ERROR``: large enough to stand out from measurement noise, small enough to stay where the
additive model holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hubbot.budget.measure import TensorErrors, role_of

PROBE_ERROR = 0.01  # relative weighted error each probed tensor is pushed to (geometric nearest)
MAX_BANDS = 9  # at most this many band probes, whatever the block count
# Types quick to quantize, so probe builds of a large model stay cheap.
PROBE_TYPES = ("Q2_K", "Q3_K", "Q4_0", "Q4_K", "Q5_0", "Q5_K", "Q6_K", "Q8_0")


@dataclass
class Probe:
    name: str  # "role ffn_down", "blocks 0-1", "role token_embd"
    types: dict[str, str]  # tensor -> type quantized to (every other tensor stays full precision)
    kld: float | None = None


@dataclass
class Coefficients:
    """Per-tensor factor turning weighted error into predicted mean KLD, and how it was fitted."""

    per_tensor: dict[str, float]
    roles: dict[str, float]
    bands: list[tuple[int, int, float]]  # (first block, last block, factor)
    probes: list[dict] = field(default_factory=list)  # name, measured, predicted

    def to_json(self) -> dict:
        return {"per_tensor": self.per_tensor, "roles": self.roles,
                "bands": [list(b) for b in self.bands], "probes": self.probes}

    @classmethod
    def from_json(cls, d: dict) -> "Coefficients":
        return cls(d["per_tensor"], d["roles"], [tuple(b) for b in d["bands"]], d.get("probes", []))


def bands(n_blocks: int, max_bands: int = MAX_BANDS) -> list[tuple[int, int]]:
    """Consecutive block ranges (inclusive): the first and the last block alone (they differ most
    from their neighbours: one reads the embeddings, the other writes the output), the blocks
    between them in even bands."""
    if n_blocks <= max_bands:
        return [(b, b) for b in range(n_blocks)]
    if max_bands < 3:
        edges = [round(i * n_blocks / max_bands) for i in range(max_bands + 1)]
        return [(edges[i], edges[i + 1] - 1) for i in range(max_bands)]
    k, inner = max_bands - 2, n_blocks - 2
    edges = [1 + round(i * inner / k) for i in range(k + 1)]
    middle = [(edges[i], edges[i + 1] - 1) for i in range(k) if edges[i + 1] > edges[i]]
    return [(0, 0), *middle, (n_blocks - 1, n_blocks - 1)]


def probe_type(te: TensorErrors) -> str:
    """The probe type for one tensor: relative error nearest PROBE_ERROR (log scale), quick types only."""
    usable = {t: e / te.norm for t, e in te.errors.items() if t in PROBE_TYPES and te.norm > 0}
    if not usable:
        usable = {t: e / te.norm if te.norm else 0.0 for t, e in te.errors.items()}
    floor = 1e-12
    return min(sorted(usable), key=lambda t: (abs(math.log(max(usable[t], floor) / PROBE_ERROR)), t))


def design(errors: dict[str, TensorErrors], n_blocks: int, max_bands: int = MAX_BANDS) -> list[Probe]:
    """Role probes (one per role, the token embedding and output included) and band probes."""
    chosen = {n: probe_type(te) for n, te in errors.items()}
    by_role: dict[str, list[str]] = {}
    by_block: dict[int, list[str]] = {}
    for n in sorted(errors):
        role, block = role_of(n)
        by_role.setdefault(role, []).append(n)
        if block is not None:
            by_block.setdefault(block, []).append(n)
    probes = [Probe(f"role {r}", {n: chosen[n] for n in names}) for r, names in sorted(by_role.items())]
    for lo, hi in bands(n_blocks, max_bands):
        names = [n for b in range(lo, hi + 1) for n in by_block.get(b, [])]
        if names:
            probes.append(Probe(f"blocks {lo}-{hi}" if hi > lo else f"block {lo}", {n: chosen[n] for n in names}))
    return probes


def _band_of(block: int, band_list: list[tuple[int, int]]) -> int:
    return next(i for i, (lo, hi) in enumerate(band_list) if lo <= block <= hi)


def fit(errors: dict[str, TensorErrors], probes: list[Probe], n_blocks: int, max_bands: int = MAX_BANDS,
        rounds: int = 500) -> Coefficients:
    """Role and band factors that make every probe's predicted KLD match its measurement."""
    band_list = bands(n_blocks, max_bands)
    e = {n: errors[n].errors[t] for p in probes for n, t in p.types.items()}
    role = {n: role_of(n)[0] for n in errors}
    band = {n: (None if (b := role_of(n)[1]) is None else _band_of(b, band_list)) for n in errors}
    role_probes = [p for p in probes if p.name.startswith("role ")]
    band_probes = [p for p in probes if not p.name.startswith("role ")]
    a = {p.name.removeprefix("role "): 1.0 for p in role_probes}
    s = [1.0] * len(band_list)

    def sval(n: str) -> float:
        return 1.0 if band[n] is None else s[band[n]]

    for _ in range(rounds):
        old = (dict(a), list(s))
        for p in role_probes:
            denom = sum(sval(n) * e[n] for n in p.types)
            a[p.name.removeprefix("role ")] = max(p.kld or 0.0, 0.0) / denom if denom > 0 else 0.0
        for p in band_probes:
            k = band[next(iter(p.types))]
            denom = sum(a[role[n]] * e[n] for n in p.types)
            s[k] = max(p.kld or 0.0, 0.0) / denom if denom > 0 else 1.0
        # The product a*s is what matters: keep the band factors' geometric mean at 1.
        logs = [math.log(x) for x in s if x > 0]
        g = math.exp(sum(logs) / len(logs)) if logs else 1.0
        s = [x / g for x in s]
        for r in a:
            if any(band[n] is not None for p in role_probes if p.name == f"role {r}" for n in p.types):
                a[r] *= g
        if all(abs(a[r] - old[0][r]) <= 1e-9 * max(a[r], 1e-30) for r in a) and \
                all(abs(x - y) <= 1e-9 * max(x, 1e-30) for x, y in zip(s, old[1])):
            break
    per_tensor = {n: a.get(role[n], 0.0) * sval(n) for n in sorted(errors)}
    report = [{"name": p.name, "measured": p.kld,
               "predicted": sum(per_tensor[n] * e[n] for n in p.types)} for p in probes]
    return Coefficients(per_tensor, dict(sorted(a.items())),
                        [(lo, hi, s[i]) for i, (lo, hi) in enumerate(band_list)], report)
