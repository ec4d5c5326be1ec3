"""Quantization types and layer-position rules.

One registry maps the names users write in variants.yaml to llama.cpp's file types
(``LLAMA_FTYPE_MOSTLY_*``) and to ggml tensor types. ``tests/test_recipes.py`` checks the
ids against ``llama_cpp`` and ``gguf.GGMLQuantizationType`` so a renumbering upstream fails
loudly instead of building the wrong file.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# llama.cpp file types (llama.h, enum llama_ftype). Name -> (ftype id, needs an imatrix).
FILE_TYPES: dict[str, tuple[int, bool]] = {
    "F32": (0, False),
    "F16": (1, False),
    "Q4_0": (2, False),
    "Q4_1": (3, False),
    "Q8_0": (7, False),
    "Q5_0": (8, False),
    "Q5_1": (9, False),
    "Q2_K": (10, False),
    "Q3_K_S": (11, False),
    "Q3_K_M": (12, False),
    "Q3_K_L": (13, False),
    "Q4_K_S": (14, False),
    "Q4_K_M": (15, False),
    "Q5_K_S": (16, False),
    "Q5_K_M": (17, False),
    "Q6_K": (18, False),
    "IQ2_XXS": (19, True),
    "IQ2_XS": (20, True),
    "Q2_K_S": (21, True),
    "IQ3_XS": (22, True),
    "IQ3_XXS": (23, True),
    "IQ1_S": (24, True),
    "IQ4_NL": (25, False),
    "IQ3_S": (26, False),
    "IQ3_M": (27, False),
    "IQ2_S": (28, True),
    "IQ2_M": (29, True),
    "IQ4_XS": (30, False),
    "IQ1_M": (31, True),
    "BF16": (32, False),
    "TQ1_0": (36, False),
    "TQ2_0": (37, False),
}

# The short names llama.cpp's quantize tool also accepts.
FILE_TYPE_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

# ggml tensor types usable for output/embeddings/overrides (gguf.GGMLQuantizationType ids).
TENSOR_TYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
    "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14,
    "IQ2_XXS": 16, "IQ2_XS": 17, "IQ3_XXS": 18, "IQ1_S": 19, "IQ4_NL": 20,
    "IQ3_S": 21, "IQ2_S": 22, "IQ4_XS": 23, "IQ1_M": 29, "BF16": 30,
    "TQ1_0": 34, "TQ2_0": 35,
}
TENSOR_TYPE_NAMES = {v: k for k, v in TENSOR_TYPES.items()}

# Tensor types llama.cpp refuses to produce without an importance matrix (llama-quant.cpp).
TENSOR_TYPES_NEEDING_IMATRIX = frozenset({"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M"})

# Types that are full precision: building them is a copy/convert, not a quantization.
FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})

GGML_TYPE_COUNT = 43  # "unset" for output_tensor_type / token_embedding_type


def suggest(name: str, choices) -> str:
    by_upper = {str(c).upper(): c for c in choices}
    close = difflib.get_close_matches(str(name).upper(), list(by_upper), n=1, cutoff=0.5)
    return f"; did you mean {by_upper[close[0]]}?" if close else f"; known: {', '.join(sorted(choices))}"


def normalize_file_type(name: str) -> str:
    """Canonical llama.cpp file-type name for ``name``; ValueError with a suggestion."""
    key = str(name).strip().upper()
    key = FILE_TYPE_ALIASES.get(key, key)
    if key not in FILE_TYPES:
        raise ValueError(f"unknown quant type {name!r}{suggest(key, FILE_TYPES)}")
    return key


def normalize_tensor_type(name: str) -> str:
    """Canonical ggml tensor-type name for ``name``; ValueError with a suggestion."""
    key = str(name).strip().upper()
    if key not in TENSOR_TYPES:
        raise ValueError(f"unknown tensor type {name!r}{suggest(key, TENSOR_TYPES)}")
    return key


def file_type_needs_imatrix(name: str) -> bool:
    return FILE_TYPES[normalize_file_type(name)][1]


# --- layer-position rules -------------------------------------------------------------

# Tensor roles inside a block that rules can name (GGUF tensor names blk.N.<role>.weight).
ROLES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

_FRACTION = r"(\d+(?:\.\d+)?)%"
_BLOCK_SPECS = {
    "first": re.compile(rf"^first\s+{_FRACTION}$"),
    "last": re.compile(rf"^last\s+{_FRACTION}$"),
    "edges": re.compile(rf"^(?:edges|first\s+and\s+last)\s+{_FRACTION}$"),
    "middle": re.compile(rf"^middle\s+{_FRACTION}$"),
    "span": re.compile(rf"^{_FRACTION}\s*-\s*{_FRACTION}$"),
}
_INDEX_LIST = re.compile(r"^\d+(?:\s*-\s*\d+)?(?:\s*,\s*\d+(?:\s*-\s*\d+)?)*$")


def _count(fraction_pct: float, n_blocks: int) -> int:
    # Round half up so "first 25%" of 18 blocks protects 5 blocks, not 4 (Python's round is
    # banker's rounding); the adaptive recipes err on the side of protecting more.
    return min(n_blocks, int(fraction_pct / 100.0 * n_blocks + 0.5))


def check_block_spec(spec: str) -> None:
    """Raise ValueError unless ``spec`` is a block selector hubbot understands."""
    s = " ".join(str(spec).lower().split())
    if s == "all" or _INDEX_LIST.match(s) or any(p.match(s) for p in _BLOCK_SPECS.values()):
        for m in re.finditer(_FRACTION, s):
            if float(m.group(1)) > 100:
                raise ValueError(f"block selector {spec!r} has a percentage over 100")
        return
    raise ValueError(
        f"unknown block selector {spec!r}; use 'all', 'first 25%', 'last 25%', "
        "'edges 25%', 'middle 50%', '25%-75%' or block indices like '0-3,17'"
    )


def highest_block(spec: str) -> int | None:
    """The highest block index ``spec`` names explicitly ('0-3,17' -> 17); None for 'all' and percentages."""
    s = " ".join(str(spec).lower().split())
    if not _INDEX_LIST.match(s):
        return None
    return max(int(n) for n in re.findall(r"\d+", s))


def select_blocks(spec: str, n_blocks: int) -> list[int]:
    """Block indices ``spec`` names in a model with ``n_blocks`` blocks."""
    check_block_spec(spec)
    s = " ".join(str(spec).lower().split())
    if s == "all":
        return list(range(n_blocks))
    if m := _BLOCK_SPECS["first"].match(s):
        return list(range(_count(float(m.group(1)), n_blocks)))
    if m := _BLOCK_SPECS["last"].match(s):
        k = _count(float(m.group(1)), n_blocks)
        return list(range(n_blocks - k, n_blocks))
    if m := _BLOCK_SPECS["edges"].match(s):
        k = _count(float(m.group(1)), n_blocks)
        return sorted(set(range(k)) | set(range(n_blocks - k, n_blocks)))
    if m := _BLOCK_SPECS["middle"].match(s):
        k = _count(float(m.group(1)), n_blocks)
        start = (n_blocks - k) // 2
        return list(range(start, start + k))
    if m := _BLOCK_SPECS["span"].match(s):
        lo = _count(float(m.group(1)), n_blocks)
        hi = _count(float(m.group(2)), n_blocks)
        return list(range(lo, max(lo, hi)))
    out: set[int] = set()
    for part in s.split(","):
        a, _, b = part.strip().partition("-")
        lo, hi = int(a), int(b or a)
        out.update(range(lo, hi + 1))
    return sorted(i for i in out if i < n_blocks)


@dataclass(frozen=True)
class LayerRule:
    """Type ``type`` for the tensors of ``roles`` in the blocks ``blocks`` selects."""

    blocks: str
    type: str
    roles: tuple[str, ...] = ROLES


@dataclass(frozen=True)
class TensorOverride:
    """One ordered regex -> tensor type override, as llama.cpp's quantizer takes it."""

    pattern: str
    type: str


def compile_layer_rules(rules: list[LayerRule], n_blocks: int) -> list[TensorOverride]:
    """Turn position rules into llama.cpp overrides for a model with ``n_blocks`` blocks.

    The first rule that selects a (block, role) wins, matching llama.cpp's first-match
    semantics for overrides. Blocks that share a role and type are folded into one
    anchored pattern so the override list stays short even for 62-block models.
    """
    chosen: dict[tuple[str, int], str] = {}
    for rule in rules:
        for block in select_blocks(rule.blocks, n_blocks):
            for role in rule.roles:
                chosen.setdefault((role, block), rule.type)
    grouped: dict[tuple[str, str], list[int]] = {}
    for (role, block), ttype in chosen.items():
        grouped.setdefault((role, ttype), []).append(block)
    overrides = []
    for role in ROLES:
        for (r, ttype), blocks in sorted(grouped.items(), key=lambda kv: (kv[0][1], min(kv[1]))):
            if r != role:
                continue
            alternatives = "|".join(str(b) for b in sorted(blocks))
            overrides.append(TensorOverride(rf"^blk\.({alternatives})\.{role}\.weight$", ttype))
    return overrides


# --- shape fallbacks for explicit types -------------------------------------------------
# llama.cpp applies its fallback table only to the types its own mixing rules pick; a type
# given explicitly (override, output or embedding type) is written as asked, and a row length
# that is not a multiple of the block size aborts the process. hubbot applies the same table
# to explicit types first, so a recipe written for a 27B model (rows of 5376) also builds on a
# model with 640-wide rows, with the same result llama.cpp's own rules would give.
SHAPE_FALLBACK = {
    "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
    "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL", "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL",
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "IQ4_XS": "IQ4_NL",
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}


def block_size(type_name: str) -> int:
    import gguf

    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]][0]


def fit_type(type_name: str, row_length: int) -> str:
    """``type_name`` if rows of ``row_length`` fit its blocks, else llama.cpp's fallback type."""
    if row_length % block_size(type_name) == 0:
        return type_name
    new = SHAPE_FALLBACK.get(type_name, "F16")
    return new if row_length % block_size(new) == 0 else "F16"


def fit_overrides(overrides: list[TensorOverride], row_lengths: dict[str, int]) -> list[TensorOverride]:
    """Overrides that never ask for a type a tensor's rows cannot hold.

    ``row_lengths`` maps tensor name -> ne0. For every tensor whose first matching override
    does not fit, an exact-name override with the fallback type is put in front.
    """
    fixes: list[TensorOverride] = []
    compiled = [(re.compile(o.pattern), o) for o in overrides]
    for name, ne0 in row_lengths.items():
        hit = next((o for rx, o in compiled if rx.search(name)), None)
        if hit is not None and (fitted := fit_type(hit.type, ne0)) != hit.type:
            fixes.append(TensorOverride(f"^{re.escape(name)}$", fitted))
    return fixes + list(overrides)


# --- built-in layer-adaptive recipes ---------------------------------------------------
# The reference card's "adaptive" ladder, written as data. The outermost blocks (the first and
# last 12.5%) are where low-bit error hurts most: there ffn_down gets a 3-4 bit type and the
# attention K/V/output projections 4.5-bit Q4_K, while the middle keeps the base type (and,
# where the budget allows, a slightly better ffn_down). Embeddings and output keep llama.cpp's
# own protected choice (Q5_K for these base types, Q8_0 when rows do not fit K-quants).
# The types were picked by measurement (benchmarks/bench_adaptive.py) under the constraint that
# a Gemma-3-27B-shaped model grows by at most 10% over the standard mix of the same base type.

_EDGE_ATTN = ["attn_k", "attn_v", "attn_output"]


def _adaptive(base: str, edge_down: str, edge_attn: str = "Q4_K", middle_down: str | None = None,
              edges: str = "edges 12.5%") -> dict:
    layers = [
        {"blocks": edges, "roles": ["ffn_down"], "type": edge_down},
        {"blocks": edges, "roles": list(_EDGE_ATTN), "type": edge_attn},
    ]
    if middle_down:
        layers.append({"blocks": "all", "roles": ["ffn_down"], "type": middle_down})
    return {"type": base, "layers": layers}


BUILTIN_RECIPES: dict[str, dict] = {
    "dynamic-iq2_xxs": _adaptive("IQ2_XXS", "IQ4_XS"),
    "dynamic-iq2_xs": _adaptive("IQ2_XS", "IQ4_XS", middle_down="IQ2_S"),
    "dynamic-iq2_s": _adaptive("IQ2_S", "IQ4_XS"),
    "dynamic-iq1_m": _adaptive("IQ1_M", "IQ3_XXS", middle_down="IQ2_XXS"),
    "dynamic-iq1_s": _adaptive("IQ1_S", "IQ3_XXS"),
}
