"""Size budgets: per-tensor types chosen from measured sensitivity (``recipe: auto``)."""
