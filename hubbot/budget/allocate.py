"""Choosing one type per tensor: least predicted degradation within a byte budget.

Each tensor offers a few (bytes, predicted KLD) options; the choice is a multiple-choice knapsack.
It is solved exactly by dynamic programming over the budget cut into ``STEPS`` equal slices
(option sizes rounded to the nearest slice), then repaired and filled with exact byte counts:
while the exact total is over the budget the cheapest downgrade per byte saved is taken, and
while room is left the best upgrade per byte that still fits. Options that are worse and larger
than another option of the same tensor are dropped first. Ties break on tensor name and type
order, so the same inputs always give the same allocation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEPS = 1 << 15


@dataclass(frozen=True)
class Option:
    type: str
    bytes: int
    cost: float  # predicted contribution to the mean KLD


@dataclass
class Allocation:
    choice: dict[str, Option]  # tensor name -> chosen option
    budget: int  # bytes available to the tensors

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.choice.values())

    @property
    def cost(self) -> float:
        return float(sum(o.cost for o in self.choice.values()))

    def types(self) -> dict[str, str]:
        return {n: o.type for n, o in self.choice.items()}


def pareto(options: list[Option]) -> list[Option]:
    """Options sorted by size, keeping only those that lower the cost (smallest first)."""
    best: list[Option] = []
    for o in sorted(options, key=lambda o: (o.bytes, o.cost)):
        if not best or o.cost < best[-1].cost:
            best.append(o)
    return best


class BudgetTooSmall(ValueError):
    def __init__(self, needed: int) -> None:
        super().__init__(f"the smallest choice needs {needed} bytes")
        self.needed = needed


def allocate(options: dict[str, list[Option]], budget: int) -> Allocation:
    """The choice of one option per tensor with the least total cost and total bytes <= budget."""
    names = sorted(options)
    fronts = {n: pareto(options[n]) for n in names}
    smallest = sum(f[0].bytes for f in fronts.values())
    if smallest > budget:
        raise BudgetTooSmall(smallest)
    choice = _knapsack(names, fronts, budget)
    _repair(choice, fronts, budget)
    _fill(choice, fronts, budget)
    return Allocation({n: fronts[n][choice[n]] for n in names}, budget)


def _knapsack(names: list[str], fronts: dict[str, list[Option]], budget: int) -> dict[str, int]:
    unit = max(1.0, budget / STEPS)
    cap = int(budget // unit)
    inf = np.inf
    dp = np.full(cap + 1, inf)
    dp[0] = 0.0
    picks = np.zeros((len(names), cap + 1), dtype=np.int16)
    for i, n in enumerate(names):
        new = np.full(cap + 1, inf)
        arg = picks[i]
        for k, o in enumerate(fronts[n]):
            w = int(round(o.bytes / unit))
            if w > cap:
                break
            seg = dp[:cap + 1 - w] + o.cost
            target = new[w:]
            better = seg < target  # strict: the smaller option wins ties
            target[better] = seg[better]
            arg[w:][better] = k
        dp = new
    # dp[b] is the least cost at exactly b slices: take the best over all b.
    b = int(np.argmin(dp))
    choice: dict[str, int] = {}
    for i in range(len(names) - 1, -1, -1):
        k = int(picks[i, b])
        choice[names[i]] = k
        b -= int(round(fronts[names[i]][k].bytes / unit))
    return choice


def _total(choice: dict[str, int], fronts: dict[str, list[Option]]) -> int:
    return sum(fronts[n][k].bytes for n, k in choice.items())


def _repair(choice: dict[str, int], fronts: dict[str, list[Option]], budget: int) -> None:
    """Rounding to slices can overshoot by a few slices: step down where it costs least per byte."""
    while _total(choice, fronts) > budget:
        best = None
        for n in sorted(choice):
            k = choice[n]
            if k == 0:
                continue
            lo, hi = fronts[n][k - 1], fronts[n][k]
            rate = (lo.cost - hi.cost) / max(1, hi.bytes - lo.bytes)
            if best is None or rate < best[0]:
                best = (rate, n)
        assert best is not None  # the smallest options fit, checked by allocate()
        choice[best[1]] -= 1


def _fill(choice: dict[str, int], fronts: dict[str, list[Option]], budget: int) -> None:
    """Spend what the slices left over: the upgrade with the best gain per byte that still fits."""
    room = budget - _total(choice, fronts)
    while True:
        best = None
        for n in sorted(choice):
            k = choice[n]
            cur = fronts[n][k]
            for j in range(k + 1, len(fronts[n])):
                up = fronts[n][j]
                extra = up.bytes - cur.bytes
                if extra > room:
                    break
                rate = (cur.cost - up.cost) / max(1, extra)
                if best is None or rate > best[0]:
                    best = (rate, n, j, extra)
        if best is None or best[0] <= 0:
            return
        _, n, j, extra = best
        choice[n] = j
        room -= extra
