"""The card's view of ``recipe: auto`` files: the budget, the predicted and measured divergence,
what the allocation raised and lowered against llama.cpp's mix of the same type, and the
measured comparison with the standard mix and the layer recipe of that type.

The build records each auto file's choice in its manifest entry (``auto``: budget, predicted
KLD, per-role changes); ``auto_summary`` reads that record once, and the templates get typed values.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubbot.card.inputs import AutoChange, AutoSummary, VariantRow
from hubbot.manifest import AutoRecord


@dataclass(frozen=True)
class AutoComparison:
    """A measured auto file with the measured standard-mix and layer-recipe files of its type."""

    auto: VariantRow
    standard: VariantRow | None
    adaptive: VariantRow | None


@dataclass(frozen=True)
class AutoSection:
    variants: list[VariantRow]
    comparisons: list[AutoComparison]
    has_kld: bool


def _runs(blocks: list[int]) -> str:
    """'0-3, 16, 17' for a sorted list of block indices."""
    parts, start = [], None
    for i, b in enumerate(blocks):
        if start is None:
            start = b
        if i + 1 == len(blocks) or blocks[i + 1] != b + 1:
            parts.append(str(start) if start == b else f"{start}-{b}")
            start = None
    return ", ".join(parts)


def auto_summary(raw: AutoRecord | None) -> AutoSummary | None:
    """A manifest entry's ``auto`` record, with the changes grouped by role, direction and types."""
    if raw is None or not raw.to_json():
        return None
    changes = []
    for role in raw.changes or []:
        for kind in ("raised", "lowered"):
            groups: dict[tuple[str, str], list] = {}
            for c in role.get(kind) or []:
                groups.setdefault((c["from"], c["to"]), []).append(c["block"])
            for (old, new), blocks in sorted(groups.items()):
                where = _runs(sorted(b for b in blocks if b is not None))
                changes.append(AutoChange(role["role"], kind, old, new, where))
    return AutoSummary(budget=raw.budget, budget_text=raw.budget_text, predicted_kld=raw.predicted_kld,
                       standard_predicted_kld=raw.standard_predicted_kld, changes=changes)


def auto_section(rows: list[VariantRow]) -> AutoSection | None:
    auto_rows = [r for r in rows if r.auto]
    if not auto_rows:
        return None
    comparisons = []
    for a in auto_rows:
        std = next((s for s in rows if s.is_standard and s.type == a.type and s.result), None)
        dyn = next((s for s in rows if s.adaptive and s.type == a.type and s.result), None)
        comparisons.append(AutoComparison(auto=a, standard=std, adaptive=dyn))
    return AutoSection(variants=auto_rows, comparisons=comparisons,
                       has_kld=any(r.result and r.result.kld_mean is not None for r in auto_rows))
