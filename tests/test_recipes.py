"""The quant-type registry against llama.cpp and gguf, and layer-position rules."""

from __future__ import annotations

import re

import gguf
import llama_cpp
import pytest

from hubbot.config import recipes


@pytest.mark.parametrize("name", sorted(recipes.FILE_TYPES))
def test_file_type_ids_match_llama_cpp(name):
    ftype_id, _ = recipes.FILE_TYPES[name]
    constant = "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}"
    assert getattr(llama_cpp, constant) == ftype_id


@pytest.mark.parametrize("name", sorted(recipes.TENSOR_TYPES))
def test_tensor_type_ids_match_gguf(name):
    assert gguf.GGMLQuantizationType[name].value == recipes.TENSOR_TYPES[name]


def test_aliases_and_suggestions():
    assert recipes.normalize_file_type("q4_k") == "Q4_K_M"
    assert recipes.normalize_file_type(" iq2_xxs ") == "IQ2_XXS"
    with pytest.raises(ValueError, match="did you mean Q4_K_M"):
        recipes.normalize_file_type("Q4_KM")
    with pytest.raises(ValueError, match="did you mean IQ4_XS"):
        recipes.normalize_tensor_type("IQ4XS")


def test_needs_imatrix_table():
    needing = {n for n, (_, need) in recipes.FILE_TYPES.items() if need}
    assert needing == {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", list(range(18))),
        ("first 25%", [0, 1, 2, 3, 4]),
        ("last 25%", [13, 14, 15, 16, 17]),
        ("edges 25%", [0, 1, 2, 3, 4, 13, 14, 15, 16, 17]),
        ("first and last 25%", [0, 1, 2, 3, 4, 13, 14, 15, 16, 17]),
        ("middle 50%", [4, 5, 6, 7, 8, 9, 10, 11, 12]),
        ("25%-75%", [5, 6, 7, 8, 9, 10, 11, 12, 13]),
        ("0-2, 17", [0, 1, 2, 17]),
        ("40", []),
    ],
)
def test_select_blocks_on_18_blocks(spec, expected):
    assert recipes.select_blocks(spec, 18) == expected


@pytest.mark.parametrize("spec", ["first quarter", "edges 125%", "1-", "middle"])
def test_bad_block_selectors(spec):
    with pytest.raises(ValueError):
        recipes.check_block_spec(spec)


def test_compile_layer_rules_first_rule_wins_and_folds_blocks():
    rules = [
        recipes.LayerRule("edges 25%", "IQ4_XS", ("attn_v", "ffn_down")),
        recipes.LayerRule("all", "IQ2_XXS", ("attn_v", "ffn_down", "attn_q")),
    ]
    overrides = recipes.compile_layer_rules(rules, 8)
    # Every (block, role) gets exactly the type of the first rule that selects it.
    for block in range(8):
        for role in ("attn_v", "ffn_down", "attn_q"):
            name = f"blk.{block}.{role}.weight"
            hits = [o.type for o in overrides if re.search(o.pattern, name)]
            want = "IQ4_XS" if block in (0, 1, 6, 7) and role != "attn_q" else "IQ2_XXS"
            assert hits == [want], (name, hits)
    # Patterns are anchored: blk.1 must not match blk.10/11.
    assert not any(re.search(o.pattern, "blk.11.attn_v.weight") for o in overrides if o.type == "IQ4_XS")
    assert len(overrides) == 5  # (attn_q: 1) + (attn_v: 2) + (ffn_down: 2)


def test_builtin_recipes_are_valid_configs():
    from hubbot.config import VariantConfig

    for name, recipe in recipes.BUILTIN_RECIPES.items():
        v = VariantConfig.model_validate({"name": name, **recipe})
        assert v.layers, name
        assert v.type == name.removeprefix("dynamic-").upper()
