"""Bad input from issue 14 that hubbot used to answer late, vaguely or never: each case feeds the input
to the real command line and checks the one line, the exit code, and that nothing was left behind.

(The token, endpoint, ref-name and flag cases are in test_hub_errors.py, the local Hub's in
test_localhub.py; ``benchmarks/sweep_bad_input.py`` runs all of them as subprocesses.)
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.configs import write_config

from hubbot.cli import main
from hubbot.config import load_config
from hubbot.config.yaml_lines import MAX_VALUES
from hubbot.errors import describe_os_error

LADDER = """\
source:
  path: {source}
target:
  repo: someone/tiny-GGUF
card:
  model_name: tiny
variants:
  - name: q8_0
    type: Q8_0
  - name: q4_0
    type: Q4_0
"""


def alias_bomb(levels: int = 8, width: int = 9, under: str = "") -> str:
    """YAML whose nested aliases expand to width**levels values (43 million for 8 levels of 9)."""
    indent = "    " if under else ""
    lines = [f"{indent}a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines)


def one_line(args: list[str], code: int) -> str:
    """Run ``hubbot ARGS``; the single stderr line, checked for the exit code and the absence of a traceback."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def ladder(tmp_path, tiny_gguf) -> Path:
    return write_config(tmp_path / "proj", LADDER.format(source=tiny_gguf))


def nothing_built(cfg: Path) -> bool:
    out = load_config(cfg).workdir / "out"
    return not out.exists() or not any(out.iterdir())


# --- variants.yaml ------------------------------------------------------------------------------

def test_alias_bomb_at_the_top_is_an_unknown_key_at_once(tmp_path, ladder):
    cfg = write_config(tmp_path / "bomb", alias_bomb() + "\n" + ladder.read_text())
    start = time.monotonic()
    line = one_line(["plan", "-c", str(cfg)], 2)
    assert time.monotonic() - start < 10  # it used to run for minutes
    assert line == (f"error: {cfg}:1: unknown key 'a0'; remove it or check the spelling (known keys: source, target, "
                    "card, imatrix, benchmark, build, sensitivity, variants)")
    assert not (cfg.parent / ".hubbot").exists()


def test_alias_bomb_under_a_free_form_key_is_capped(tmp_path, ladder):
    text = ladder.read_text().replace("  model_name: tiny\n", "  model_name: tiny\n  extra:\n" + alias_bomb(under="extra") + "\n")
    cfg = write_config(tmp_path / "bomb", text)
    start = time.monotonic()
    line = one_line(["plan", "-c", str(cfg)], 2)
    assert time.monotonic() - start < 10
    assert line.startswith(f"error: {cfg}:")
    assert f"expands to more than {MAX_VALUES:,} values (nested anchors and aliases?)" in line
    assert not (cfg.parent / ".hubbot").exists()


def test_aliases_that_stay_small_still_work(tmp_path, tiny_gguf):
    text = LADDER.format(source=tiny_gguf).replace(
        "  - name: q4_0\n    type: Q4_0\n",
        "  - name: q4_0\n    type: Q4_0\n    layers: &edges\n      - blocks: first 25%\n        type: Q8_0\n"
        "  - name: q4_1\n    type: Q4_1\n    layers: *edges\n")
    cfg = load_config(write_config(tmp_path, text))
    assert cfg.variants[2].layers == cfg.variants[1].layers


def test_misspelt_key_is_named_with_the_key_it_meant(tmp_path, ladder):
    cfg = write_config(tmp_path / "typo", ladder.read_text().replace("    type: Q4_0", "    tpye: Q4_0"))
    assert one_line(["plan", "-c", str(cfg)], 2) == \
        f"error: {cfg}:11: unknown key 'tpye' in variants.1; did you mean 'type'?"
    cfg = write_config(tmp_path / "typo2", ladder.read_text().replace("target:", "traget:"))
    assert one_line(["plan", "-c", str(cfg)], 2) == f"error: {cfg}:3: unknown key 'traget'; did you mean 'target'?"


def test_model_name_that_leaves_the_output_folder_is_a_config_error(tmp_path, ladder):
    cfg = write_config(tmp_path / "name", ladder.read_text().replace("model_name: tiny", "model_name: ../escape"))
    line = one_line(["build", "-c", str(cfg)], 2)
    assert line.startswith(f"error: {cfg}:6: card.model_name '../escape' starts every file name")
    assert "'file:' on a variant" in line
    assert not (cfg.parent / ".hubbot").exists() and not (cfg.parent.parent / "escape-q8_0.gguf").exists()


# --- checks that need the model, made before any work ----------------------------------------------

@pytest.mark.parametrize("command", ["plan", "build"])
def test_block_index_past_the_last_block_is_refused_before_any_work(tmp_path, ladder, command):
    text = ladder.read_text().replace("    type: Q4_0\n", "    type: Q4_0\n    layers:\n      - blocks: 2-9\n        type: Q8_0\n")
    cfg = write_config(tmp_path / command, text)
    line = one_line([command, "-c", str(cfg)], 2)
    assert line == (f"error: {cfg}:13: layer rule '2-9' -> Q8_0 of variant 'q4_0' names block 9, but tiny-f16.gguf "
                    "has 4 blocks (0-3); fix the indices, or use a share such as 'first 25%'")
    assert nothing_built(cfg)


@pytest.mark.parametrize("command", ["plan", "build"])
def test_max_shard_size_below_a_tensor_is_refused_before_any_work(tmp_path, ladder, command):
    cfg = write_config(tmp_path / command, ladder.read_text().replace("  repo: someone/tiny-GGUF\n",
                                                                      "  repo: someone/tiny-GGUF\n  max_shard_size: 100KB\n"))
    line = one_line([command, "-c", str(cfg)], 2)
    assert line.startswith(f"error: {cfg}:5: target.max_shard_size 100.00 KB is smaller than tensor ")
    assert "of variant 'q8_0' (139.26 KB as Q8_0); a shard holds whole tensors, so raise max_shard_size to at least " \
           "139.26 KB" in line
    assert nothing_built(cfg)
    # A limit every tensor fits under is fine: the file is built and split at publish time.
    cfg.write_text(cfg.read_text().replace("100KB", "1MB"))
    result = CliRunner().invoke(main, ["plan", "-c", str(cfg)])
    assert result.exit_code == 0, result.output


# --- paths that cannot be written ----------------------------------------------------------------

def test_workdir_under_a_regular_file(tmp_path, ladder):
    cfg = write_config(tmp_path / "w", ladder.read_text() + "build:\n  workdir: afile/work\n")
    (cfg.parent / "afile").write_text("not a folder")
    line = one_line(["build", "-c", str(cfg)], 1)
    assert line == (f"error: work directory {cfg.parent / 'afile' / 'work'}: {cfg.parent / 'afile'} is a file, not a "
                    "folder; set build.workdir in variants.yaml to a folder path, or move that file away")
    assert (cfg.parent / "afile").read_text() == "not a folder"


def test_workdir_out_that_is_a_regular_file(tmp_path, ladder):
    (ladder.parent / ".hubbot").mkdir()
    (ladder.parent / ".hubbot" / "out").write_text("not a folder")
    line = one_line(["build", "-c", str(ladder)], 1)
    root = ladder.parent / ".hubbot"
    assert line == (f"error: work directory {root}: {root / 'out'} is a file, not a folder; set build.workdir in "
                    "variants.yaml to a folder path, or move that file away")
    assert not (root / "cache").exists()


def test_card_outputs_that_cannot_be_files_fail_before_anything_is_written(tmp_path, ladder):
    assert CliRunner().invoke(main, ["build", "-c", str(ladder)]).exit_code == 0
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    good = tmp_path / "card.md"
    line = one_line(["card", "-c", str(ladder), "--dry-run", "-o", str(good), "--html", str(blocker / "p.html")], 1)
    assert line == f"error: --html {blocker / 'p.html'}: {blocker} is a file, not a folder; choose a path inside a folder"
    assert not good.exists()  # the card was not written either
    line = one_line(["card", "-c", str(ladder), "--dry-run", "-o", str(blocker / "card.md")], 1)
    assert line == f"error: -o/--output {blocker / 'card.md'}: {blocker} is a file, not a folder; choose a path inside a folder"


def test_ci_outputs_under_a_file(tmp_path, ladder):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    line = one_line(["ci", "export", "-c", str(ladder), "--only", "q8_0", "-o", str(blocker / "results")], 1)
    assert line == (f"error: -o/--output {blocker / 'results'}: {blocker} is a file, not a folder; choose a path "
                    "inside a folder")
    line = one_line(["ci", "matrix", "-c", str(ladder), "--github-output", str(blocker / "out")], 1)
    assert line.startswith(f"error: --github-output {blocker / 'out'}: {blocker} is a file")


def test_imatrix_output_is_checked_before_the_matrix_is_computed(tmp_path, tiny_gguf, calibration_text):
    text = LADDER.format(source=tiny_gguf) + f"imatrix:\n  calibration:\n    path: {calibration_text}\n"
    cfg = write_config(tmp_path / "im", text)
    (tmp_path / "afile").write_text("x")
    start = time.monotonic()
    line = one_line(["imatrix", "-c", str(cfg), "-o", str(tmp_path / "afile" / "m.gguf")], 1)
    assert line.startswith(f"error: -o/--output {tmp_path / 'afile' / 'm.gguf'}: {tmp_path / 'afile'} is a file")
    assert time.monotonic() - start < 30 and not (cfg.parent / ".hubbot").exists()


def test_inspect_of_a_folder(tmp_path):
    assert one_line(["inspect", str(tmp_path)], 1) == \
        f"error: {tmp_path} is a folder, not a GGUF file; give the path of a .gguf file"


@pytest.mark.parametrize(("code", "expected"), [
    (errno.ENOSPC, "no space left on the disk holding {p}; free some space or set build.workdir to another disk"),
    (errno.EACCES, "permission denied for {p}; check its permissions or choose another path"),
    (errno.EISDIR, "{p} is a folder, not a file; give the path of a file"),
    (errno.EROFS, "{p} is on a read-only file system; choose a writable path"),
    (errno.ENOENT, "{p} does not exist; check the path"),
])
def test_file_system_errors_say_what_to_do(tmp_path, code, expected):
    path = tmp_path / "x"
    assert describe_os_error(OSError(code, "strerror", str(path))) == expected.format(p=path)


@pytest.mark.parametrize("variant", ["{name: iq2, type: IQ2_XXS}", "{name: fit, recipe: auto, budget: {like: Q4_K_M}}"])
def test_a_release_build_job_without_its_artifacts_says_which_and_computes_nothing(tmp_path, tiny_gguf, variant):
    # In a release the imatrix job computes the importance matrix and auto's sensitivity once;
    # a build job that did not receive them must not spend hours computing them again.
    from support.paths import DATA_DIR

    cfg = write_config(tmp_path, f"source: {{path: {tiny_gguf}}}\ntarget: {{repo: me/tiny-GGUF}}\n"
                                 f"imatrix:\n  calibration: {{path: {DATA_DIR / 'calibration.txt'}}}\n  ctx: 64\n  chunks: 2\n"
                                 f"variants:\n  - {variant}\n")
    result = CliRunner().invoke(main, ["build", "-c", str(cfg), "--require-artifacts"])
    line = result.output.strip()
    assert result.exit_code == 1 and "\n" not in line and "Traceback" not in line, result.output
    assert "imatrix job's `imatrix` artifact" in line and "rerun that job" in line
    work = load_config(cfg).workdir
    assert not list((work / "cache").rglob("*.imatrix.gguf")) and not list((work / "out").glob("*.gguf"))


def test_an_auto_build_job_without_the_sensitivity_artifact_says_so(tmp_path, tiny_gguf):
    from support.paths import DATA_DIR

    cfg = write_config(tmp_path, f"source: {{path: {tiny_gguf}}}\ntarget: {{repo: me/tiny-GGUF}}\n"
                                 f"imatrix:\n  calibration: {{path: {DATA_DIR / 'calibration.txt'}}}\n  ctx: 64\n  chunks: 2\n"
                                 "variants:\n  - {name: fit, recipe: auto, budget: {like: Q4_K_M}}\n")
    assert CliRunner().invoke(main, ["imatrix", "-c", str(cfg)]).exit_code == 0  # the imatrix artifact is here
    result = CliRunner().invoke(main, ["build", "-c", str(cfg), "--require-artifacts"])
    line = result.output.strip().splitlines()[-1]  # after the log's "using the cached importance matrix"
    assert result.exit_code == 1 and line.startswith("error: ") and "`sensitivity` artifact" in line, result.output
    assert "(variant 'fit')" in line and "Traceback" not in result.output
    work = load_config(cfg).workdir
    assert not list((work / "cache" / "budget").glob("*.json"))
    assert [p.name for p in (work / "out").glob("*.gguf") if not p.name.endswith(".imatrix.gguf")] == []
