"""One auto variant's choice: its budget in bytes, the allocation, and the overrides that build it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hubbot.budget.allocate import Allocation, BudgetTooSmall, allocate
from hubbot.budget.inventory import Inventory
from hubbot.budget.measure import role_of
from hubbot.budget.sensitivity import Sensitivity
from hubbot.config.budgets import BudgetConfig
from hubbot.config.recipes import TensorOverride
from hubbot.errors import ConfigError
from hubbot.workdir import human_bytes

# Bytes kept back for the metadata hubbot and llama.cpp write on top of the source's (448 bytes
# on Gemma 3 270M). Against a standard mix (like:) nothing is: both files carry the same keys, so
# their headers are the same size and comparing tensor bytes is exact.
MARGIN_LIKE = 0
MARGIN_ABSOLUTE = 16 * 1024


def _bits(inv: Inventory, n: str, t: str) -> float:
    return 8.0 * inv.choices[n].nbytes(t) / max(1, inv.choices[n].rows * inv.choices[n].shape[0])


@dataclass
class AutoChoice:
    budget: int  # bytes the file may take
    budget_text: str
    size: int  # bytes the planned file takes (tensors + header estimate)
    allocation: Allocation
    predicted_kld: float
    standard_types: dict[str, str] | None = None  # the like/label type's standard mix, per tensor
    standard_kld: float | None = None
    changes: list[dict] = field(default_factory=list)

    def types(self) -> dict[str, str]:
        return self.allocation.types()

    def to_json(self) -> dict[str, Any]:
        return {"budget": self.budget, "budget_text": self.budget_text, "size": self.size,
                "predicted_kld": self.predicted_kld, "standard_predicted_kld": self.standard_kld,
                "changes": self.changes}


def budget_bytes(budget: BudgetConfig, n_params: int, like_bytes: int | None) -> int:
    return budget.bytes_for(n_params, like_bytes)


def check_budget(where: str, name: str, budget: BudgetConfig, wanted: int, smallest: int, largest: int,
                 n_params: int) -> None:
    """ConfigError (one line) unless ``smallest <= wanted <= largest``, saying what would fit."""
    def bpw(b: int) -> str:
        return f"{8.0 * b / n_params:.2f} bpw"

    asked = f"the budget of variant {name!r} ({budget.describe()}: {human_bytes(wanted)}, {bpw(wanted)})"
    if wanted < smallest:
        raise ConfigError(f"{where}: {asked} is below the smallest file recipe: auto can make of this model "
                          f"({human_bytes(smallest)}, {bpw(smallest)}: every tensor at its smallest type); "
                          f"ask for at least {human_bytes(smallest)}")
    if wanted > largest:
        raise ConfigError(f"{where}: {asked} is above the full-precision file ({human_bytes(largest)}, {bpw(largest)}); "
                          f"ask for at most {human_bytes(largest)}, or build type: BF16 instead")


def choose(inv: Inventory, sens: Sensitivity, budget: int, header: int, margin: int) -> Allocation:
    """The allocation for a file of at most ``budget`` bytes (``header``: the source's bytes before the
    tensor data; ``margin``: kept back for metadata the output adds)."""
    room = budget - header - inv.fixed_bytes - margin
    try:
        return allocate(sens.options(inv), room)
    except BudgetTooSmall as exc:  # check_budget runs first; this is the margin's last word
        raise ConfigError(f"a budget of {human_bytes(budget)} leaves {human_bytes(room)} for the tensors, "
                          f"which need at least {human_bytes(exc.needed)}") from None


def predict(sens: Sensitivity, types: dict[str, str]) -> float | None:
    """Predicted mean KLD of a file with these tensor types (None when a type was not measured)."""
    total = 0.0
    for n, t in types.items():
        if n not in sens.errors:
            continue
        if t not in sens.errors[n].errors:
            return None
        total += sens.cost(n, t)
    return total


def changes(inv: Inventory, chosen: dict[str, str], standard: dict[str, str]) -> list[dict]:
    """Per tensor role: where the auto file spends more bits than the standard mix, and where fewer."""
    rows: dict[str, dict] = {}
    for n in sorted(chosen, key=lambda n: (role_of(n)[1] is not None, role_of(n))):
        role, block = role_of(n)
        std = standard.get(n)
        if std is None or std == chosen[n]:
            continue
        r = rows.setdefault(role, {"role": role, "raised": [], "lowered": []})
        kind = "raised" if _bits(inv, n, chosen[n]) > _bits(inv, n, std) else "lowered"
        r[kind].append({"block": block, "from": std, "to": chosen[n]})
    return list(rows.values())


def compile_overrides(types: dict[str, str]) -> list[TensorOverride]:
    """Exact-name overrides, one anchored pattern per (role, type) with the blocks as alternatives."""
    grouped: dict[tuple[str, str], list[int]] = {}
    singles: list[TensorOverride] = []
    for n, t in sorted(types.items()):
        role, block = role_of(n)
        if block is None or not n.endswith(".weight"):
            singles.append(TensorOverride(f"^{re.escape(n)}$", t))
        else:
            grouped.setdefault((role, t), []).append(block)
    out = list(singles)
    for (role, t), blocks in sorted(grouped.items(), key=lambda kv: (kv[0][0], min(kv[1]), kv[0][1])):
        alternatives = "|".join(str(b) for b in sorted(blocks))
        out.append(TensorOverride(rf"^blk\.({alternatives})\.{re.escape(role)}\.weight$", t))
    return out
