"""The budget of a ``recipe: auto`` variant, as variants.yaml writes it.

Long form (a mapping, exactly one of size / bpw / like)::

    budget: {size: 9.5GB}            # the file, metadata included
    budget: {bpw: 2.6}               # bits per weight of the whole file
    budget: {like: IQ2_XXS, extra: 10%}   # llama.cpp's IQ2_XXS mix of this model, plus 10%

Short form (one string): ``9.5GB``, ``2.6 bpw``, ``IQ2_XXS``, ``IQ2_XXS +10%``, ``Q4_K_M -500MB``.
Turning a ``like`` budget into bytes needs the model, so that happens at plan time.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hubbot.config import recipes
from hubbot.config.sizes import SIZE, parse_size
from hubbot.config.yaml_lines import LineMap
from hubbot.errors import ConfigError

_PERCENT = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*%\s*$")
_BPW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*bpw\s*$", re.IGNORECASE)
_LIKE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(?:([+-])\s*(\d+(?:\.\d+)?\s*%|[\d.]+\s*[KMGT]i?B))?\s*$", re.IGNORECASE)
BUDGET_HINT = "write e.g. 'size: 9.5GB', 'bpw: 2.6', 'like: IQ2_XXS' (with optional 'extra: 10%') or the short form '2.6 bpw' / 'IQ2_XXS +10%'"


class BudgetConfig(BaseModel):
    """How large a ``recipe: auto`` file may be: a size, bits per weight, or a standard mix's size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int | str | None = None
    bpw: float | None = None
    like: str | None = None
    extra: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ValueError(f"a bare number ({v}) is ambiguous as a budget; write '{v} bpw' or '{v}GB'")
        if not isinstance(v, str):
            return v
        if m := _BPW.match(v):
            return {"bpw": float(m.group(1))}
        if (m := SIZE.match(v)) and m.group(2):
            return {"size": v}
        if (m := _LIKE.match(v)) and not v.strip()[0].isdigit():
            return {"like": m.group(1), **({"extra": m.group(2) + m.group(3)} if m.group(2) else {})}
        raise ValueError(f"cannot read budget {v!r}; {BUDGET_HINT}")

    @model_validator(mode="after")
    def _one_kind(self) -> "BudgetConfig":
        kinds = [k for k in ("size", "bpw", "like") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of size, bpw or like; {BUDGET_HINT}")
        if self.extra is not None and self.like is None:
            raise ValueError("'extra' goes with 'like' (a margin over a standard mix's size)")
        if self.size is not None and parse_size(self.size) <= 0:
            raise ValueError("the budget size must be positive")
        if self.bpw is not None and not 0 < self.bpw <= 32:
            raise ValueError(f"bpw {self.bpw} is not a bits-per-weight figure; give a number above 0 (full precision is 16)")
        return self

    @field_validator("like")
    @classmethod
    def _like(cls, v: str | None) -> str | None:
        return None if v is None else recipes.normalize_file_type(v)

    @field_validator("extra", mode="before")
    @classmethod
    def _extra(cls, v):
        if v is None:
            return v
        text = str(v).strip()
        if _PERCENT.match(text):
            text = text.replace(" ", "")
            return text if text[0] in "+-" else "+" + text
        sign, rest = (text[0], text[1:]) if text[:1] in "+-" else ("+", text)
        if SIZE.match(rest) and SIZE.match(rest).group(2):
            return sign + rest.strip()
        raise ValueError(f"extra {v!r} is neither a percentage ('10%', '-5%') nor a size ('+500MB')")

    def bytes_for(self, n_params: int, like_bytes: int | None = None) -> int:
        """The budget in bytes for a model of ``n_params`` (``like_bytes``: the named mix's size)."""
        if self.size is not None:
            return parse_size(self.size)
        if self.bpw is not None:
            return int(self.bpw * n_params / 8)
        assert like_bytes is not None
        if not self.extra:
            return like_bytes
        if m := _PERCENT.match(self.extra):
            return int(like_bytes * (1 + float(m.group(1)) / 100))
        sign = -1 if self.extra.startswith("-") else 1
        return like_bytes + sign * parse_size(self.extra[1:])

    def describe(self) -> str:
        if self.size is not None:
            return f"size {self.size}"
        if self.bpw is not None:
            return f"{self.bpw:g} bpw"
        return f"like {self.like}" + (f" {self.extra}" if self.extra else "")


class SensitivityConfig(BaseModel):
    """How much recipe: auto spends measuring the model (the ``sensitivity:`` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: list[str] | None = Field(None, description="candidate tensor types (default: every quantized type worth choosing)")
    sample: int = Field(1 << 18, ge=4096, description="values per tensor measured for the error table (rows are sampled evenly)")
    probe_chunks: int = Field(4, ge=1, description="chunks of the calibration text each probe build is measured on")
    bands: int = Field(9, ge=1, description="at most this many probes over bands of consecutive blocks")
    probe_base: str | None = Field(None, description="type of the tensors a probe leaves alone (default: the "
                                   "source's 16-bit type; Q8_0 halves a big model's probe files)")

    @field_validator("probe_base")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        return None if v is None else recipes.normalize_tensor_type(v)

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("sensitivity.types is empty; list at least one type or remove the key")
        out = [recipes.normalize_tensor_type(t) for t in v]
        return sorted(set(out), key=out.index)


# The file type an auto variant is labelled with (general.file_type) when the budget is in bits
# per weight and no 'type' is given: the largest of these mixes whose main tensor type fits.
_LABELS = (("IQ1_S", "IQ1_S"), ("IQ1_M", "IQ1_M"), ("IQ2_XXS", "IQ2_XXS"), ("IQ2_XS", "IQ2_XS"),
           ("IQ2_S", "IQ2_S"), ("Q2_K", "Q2_K"), ("IQ3_XXS", "IQ3_XXS"), ("Q3_K_M", "Q3_K"),
           ("IQ4_XS", "IQ4_XS"), ("Q4_K_M", "Q4_K"), ("Q5_K_M", "Q5_K"), ("Q6_K", "Q6_K"), ("Q8_0", "Q8_0"))


def label_type(budget: BudgetConfig) -> str | None:
    """The file type to label an auto variant with, or None when the user must say (size budgets)."""
    if budget.like is not None:
        return budget.like
    if budget.bpw is None:
        return None
    import gguf

    best = _LABELS[0][0]
    for ftype, ttype in _LABELS:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ttype]]
        if 8.0 * size / block <= budget.bpw:
            best = ftype
    return best


def _remap_lines(lines: LineMap, origin: list[int]) -> None:
    """Point each new variant index at the lines of the entry it came from."""
    old = dict(lines.lines)
    for key in [k for k in old if len(k) >= 2 and k[0] == "variants" and isinstance(k[1], int)]:
        del lines.lines[key]
    for new, src in enumerate(origin):
        for key, line in old.items():
            if len(key) >= 2 and key[0] == "variants" and key[1] == src:
                lines.lines[("variants", new) + key[2:]] = line


def expand_auto_variants(data: dict, lines: LineMap) -> None:
    """Ladders (``like: [IQ1_S, IQ2_XXS]``) become one variant each; auto variants get their label type.

    ``- {name: auto, recipe: auto, budget: {like: [IQ1_S, IQ2_XXS]}}`` gives the variants
    ``auto-iq1_s`` and ``auto-iq2_xxs``, each at the size of that standard mix (plus ``extra``).
    """
    variants = data.get("variants")
    if not isinstance(variants, list):
        return
    out: list = []
    origin: list[int] = []
    for i, v in enumerate(variants):
        budget = v.get("budget") if isinstance(v, dict) and v.get("recipe") == "auto" else None
        like = budget.get("like") if isinstance(budget, dict) else None
        if isinstance(like, list):
            where = lines.where(("variants", i, "budget", "like"))
            if not like:
                raise ConfigError(f"{where}: the list under like: is empty; name at least one standard mix")
            for key in ("type", "file"):
                if key in v:
                    raise ConfigError(f"{where}: a ladder (a list under like:) names its files itself; remove {key!r}")
            for t in like:
                name = f"{v.get('name', 'auto')}-{str(t).lower()}"
                out.append({**v, "name": name, "budget": {**budget, "like": t}})
                origin.append(i)
            continue
        out.append(v)
        origin.append(i)
    data["variants"] = out
    _remap_lines(lines, origin)
    for i, v in enumerate(out):
        if not (isinstance(v, dict) and v.get("recipe") == "auto"):
            continue
        if "budget" not in v:
            raise ConfigError(f"{lines.where(('variants', i))}: recipe: auto needs a budget; {BUDGET_HINT}")
        if "type" in v:
            continue
        where = lines.where(("variants", i, "budget"))
        try:
            budget = BudgetConfig.model_validate(v["budget"])
        except ValidationError as exc:
            raise ConfigError(f"{where}: budget: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        except ValueError as exc:
            raise ConfigError(f"{where}: budget: {exc}") from None
        label = label_type(budget)
        if label is None:
            raise ConfigError(f"{where}: a size budget needs 'type:' as well, the llama.cpp mix the file stands in for "
                              "(it becomes the file type in its metadata), e.g. type: IQ2_XXS")
        v["type"] = label
