"""What recipe: auto may choose: the tensors llama.cpp quantizes and the types each can take.

Which tensors llama.cpp quantizes (and which it keeps in float: norms, 1-D vectors, some
architecture-specific tensors) is read from a dry run of its quantizer, not re-derived: every
tensor a Q8_0 dry run converts is a choice, every other tensor is written as the source has it.
A type is a candidate for a tensor when its rows hold whole blocks of that type (explicit types skip
llama.cpp's shape fallbacks and abort on misfit rows) and, for the types llama.cpp refuses to
produce without an importance matrix, when the matrix has values for that tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hubbot.budget import ggml_quants
from hubbot.config.recipes import FLOAT_TYPES, TENSOR_TYPES_NEEDING_IMATRIX
from hubbot.gguf_io.info import GGUFInfo

# Every quantized type worth choosing from, smallest first. Left out: the ternary TQ1_0/TQ2_0
# (for natively ternary models only) and F32 (never smaller or better than the 16-bit source).
CANDIDATES = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K", "IQ3_XXS", "IQ3_S", "Q3_K",
              "IQ4_XS", "IQ4_NL", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0")


ALIGNMENT = 32  # GGUF's default data alignment, which llama.cpp's quantizer writes


@dataclass(frozen=True)
class Tensor:
    """One tensor of the source: shape in GGUF order (ne0 first) and the type it is stored in."""

    name: str
    shape: tuple[int, ...]
    source_type: str

    @property
    def rows(self) -> int:
        return math.prod(self.shape[1:])

    def nbytes(self, type_name: str) -> int:
        """Bytes the tensor takes in a GGUF file in ``type_name``, with the padding to the next tensor."""
        raw = ggml_quants.row_bytes(type_name, self.shape[0]) * self.rows
        return -(-raw // ALIGNMENT) * ALIGNMENT


@dataclass
class Inventory:
    """The quantizable tensors with their candidate types, and the bytes of everything else."""

    choices: dict[str, Tensor]
    candidates: dict[str, tuple[str, ...]]
    fixed_bytes: int  # tensors written as they are (norms etc.), at their dry-run types
    n_tensors: int
    n_params: int

    def smallest_bytes(self) -> int:
        return self.fixed_bytes + sum(min(t.nbytes(c) for c in self.candidates[n]) for n, t in self.choices.items())

    def largest_bytes(self) -> int:
        return self.fixed_bytes + sum(max(t.nbytes(c) for c in self.candidates[n]) for n, t in self.choices.items())


def needs_imatrix(type_name: str) -> bool:
    return type_name in TENSOR_TYPES_NEEDING_IMATRIX or ggml_quants.requires_imatrix(type_name)


def candidates_for(t: Tensor, has_imatrix: bool, types=CANDIDATES) -> tuple[str, ...]:
    full = t.source_type if t.source_type in FLOAT_TYPES else "F16"
    out = [c for c in types if t.shape[0] % ggml_quants.block_size(c) == 0 and (has_imatrix or not needs_imatrix(c))]
    return (*out, full) if full not in out else tuple(out)


def build_inventory(info: GGUFInfo, dry_run_types: dict[str, str], imatrix_names: set[str],
                    types=CANDIDATES) -> Inventory:
    """The inventory of ``info``'s model. ``dry_run_types``: tensor -> type in a Q8_0 dry run."""
    choices: dict[str, Tensor] = {}
    cands: dict[str, tuple[str, ...]] = {}
    fixed = 0
    for ti in info.tensors:
        t = Tensor(ti.name, tuple(int(d) for d in ti.shape), ti.type)
        converted = dry_run_types.get(ti.name, ti.type) not in FLOAT_TYPES | {"F64"}
        if converted and len(t.shape) >= 2:
            choices[t.name] = t
            cands[t.name] = candidates_for(t, t.name in imatrix_names, types)
        else:
            fixed += t.nbytes(dry_run_types.get(ti.name, ti.type))
    return Inventory(choices, cands, fixed, len(info.tensors), info.n_params)
