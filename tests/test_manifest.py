"""Typed manifest entries: what an earlier hubbot wrote reads back typed and is rewritten unchanged.

Samples in fixtures/manifest/, copied from real runs:
- tiny-b2599d8.json: the tiny model's ladder (a split float file, a type override, the imatrix)
  built by hubbot at commit b2599d8, the last one before typed entries;
- gemma-270m-run.json: four entries of a Gemma 3 270M run (a recipe: auto file with its choice,
  a standard file with shape fallbacks, the BF16 reference, the imatrix), as that run wrote them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.configs import write_config

from hubbot.build.run import build
from hubbot.cli import main
from hubbot.config import load_config
from hubbot.errors import HubbotError
from hubbot.gguf_io.shard import ensure_shards
from hubbot.manifest import AutoRecord, ImatrixUse, ManifestEntry, Shard, SourceRecord
from hubbot.workdir import Manifest, WorkDir

FIXTURES = Path(__file__).parent / "fixtures" / "manifest"
SAMPLES = ["tiny-b2599d8.json", "gemma-270m-run.json"]


def _copy(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "manifest.json"
    shutil.copy(FIXTURES / name, path)
    return path


@pytest.mark.parametrize("name", SAMPLES)
def test_an_earlier_manifest_is_rewritten_byte_for_byte(tmp_path, name):
    path = _copy(tmp_path, name)
    before = path.read_bytes()
    manifest = Manifest(path)
    assert manifest.entries and all(isinstance(e, ManifestEntry) for e in manifest.entries.values())
    manifest.save()
    assert path.read_bytes() == before
    # Every entry alone, too (what export, merge and stage hand over one by one).
    for name, raw in json.loads(before)["outputs"].items():
        assert ManifestEntry.from_json(raw).to_json() == raw, name


def test_entries_read_as_typed_fields(tmp_path):
    tiny = Manifest(_copy(tmp_path, "tiny-b2599d8.json"))
    f16 = tiny.get("tiny-f16.gguf")
    assert f16 is not None and f16.is_variant and f16.type == "F16" and isinstance(f16.size, int)
    assert len(f16.shard_files) == 3 and all(isinstance(s, Shard) and s.size and s.sha256 for s in f16.shard_files)
    assert f16.shards.source_sha256 == f16.sha256 and f16.shards.max_size > 0
    assert sum(s.size for s in f16.shard_files) > f16.size  # each shard repeats the header
    q4 = tiny.get("tiny-q4_0.gguf")
    assert q4.output == "Q8_0" and q4.overrides == [] and q4.tensor_types["Q8_0"] >= 1
    assert isinstance(q4.imatrix, ImatrixUse) and q4.imatrix.file == "tiny.imatrix.gguf" and q4.imatrix.chunks == 3
    assert isinstance(q4.source, SourceRecord) and q4.source.origin == "local file tiny-f16.gguf" and q4.source.repo is None
    assert tiny.get("tiny-q8_0.gguf").description == "eight bits, the reference of the small files"
    im = tiny.get("tiny.imatrix.gguf")
    assert im.is_imatrix and not im.is_variant and im.calibration == "tiny calibration" and im.ctx == 64
    assert im.variant is None and im.datasets == ["tiny calibration"]

    (tmp_path / "gemma").mkdir()
    gemma = Manifest(_copy(tmp_path / "gemma", "gemma-270m-run.json"))
    auto = gemma.get("gemma-3-270m-auto-iq2_xxs.gguf")
    assert isinstance(auto.auto, AutoRecord) and auto.auto.size <= auto.auto.budget
    assert auto.auto.budget_text == "like IQ2_XXS" and auto.auto.changes and auto.overrides
    std = gemma.get("gemma-3-270m-q4_k_m.gguf")
    assert std.auto is None and std.fallbacks and all("->" in c for c in std.fallbacks.values())
    assert std.engine.llama_cpp_python == "0.3.36" and std.n_params == 268098176


def test_unknown_absent_and_null_keys_are_kept(tmp_path):
    # An entry as an older hubbot wrote it (no kind, no peak_rss, no engine), a staged one (no local stamp),
    # and keys a newer hubbot may add, at the top and inside the records: all written back as they were.
    outputs = {
        "old.gguf": {"variant": "old", "file": "old.gguf", "sha256": "a" * 64, "size": 10, "mtime_ns": 3,
                     "input_key": "k", "seconds": 1.5, "imatrix": None, "bpw": 16, "future": {"x": [1, None]}},
        "staged.gguf": {"kind": "variant", "file": "staged.gguf", "sha256": "b" * 64, "size": 20, "auto": None,
                        "source": {"sha256": "c" * 64, "mirror": "elsewhere"},
                        "shards": {"source_sha256": "b" * 64, "max_size": None,
                                   "files": [{"file": "staged-00001-of-00001.gguf", "size": 20, "extra": True}]}},
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"outputs": outputs, "version": 1}, indent=2, sort_keys=True) + "\n")
    before = path.read_bytes()
    manifest = Manifest(path)
    old = manifest.get("old.gguf")
    assert old.kind is None and old.is_variant and old.extra == {"future": {"x": [1, None]}} and old.bpw == 16
    staged = manifest.get("staged.gguf")
    assert staged.source.extra == {"mirror": "elsewhere"} and staged.shard_files[0].extra == {"extra": True}
    manifest.save()
    assert path.read_bytes() == before
    # A change rewrites only what changed.
    manifest.put("old.gguf", replace(old, size=11))
    after = json.loads(path.read_text())["outputs"]
    assert after["old.gguf"] == {**outputs["old.gguf"], "size": 11} and after["staged.gguf"] == outputs["staged.gguf"]
    # What only this machine's copy has is dropped from the portable form, nothing else.
    assert old.portable().to_json() == {k: v for k, v in outputs["old.gguf"].items() if k not in ("mtime_ns", "seconds")}


@pytest.mark.parametrize("outputs", [
    "outputs",
    {"a.gguf": []},
    {"a.gguf": {"size": "12"}},
    {"a.gguf": {"size": True}},
    {"a.gguf": {"sha256": 5}},
    {"a.gguf": {"tensor_types": {"F32": "many"}}},
    {"a.gguf": {"source": "hf"}},
    {"a.gguf": {"shards": {"files": [{"size": 1}]}}},  # a shard without its file name
    {"a.gguf": {"shards": {"files": {"file": "x"}}}},
    {"a.gguf": {"auto": {"budget": 1.5}}},
])
def test_a_wrongly_typed_entry_is_a_one_line_corrupt_error(tmp_path, outputs):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"version": 1, "outputs": outputs}))
    with pytest.raises(HubbotError, match=r"manifest.json is corrupt; delete it to rebuild") as exc:
        Manifest(path)
    assert "\n" not in str(exc.value)


def test_a_corrupt_entry_stops_the_build_with_one_line(tmp_path, tiny_gguf):
    cfg = write_config(tmp_path, f"source:\n  path: {tiny_gguf}\ntarget:\n  repo: me/tiny\n"
                                 "variants:\n  - name: q8_0\n    type: Q8_0\n")
    (tmp_path / ".hubbot").mkdir()
    (tmp_path / ".hubbot" / "manifest.json").write_text(json.dumps({"version": 1, "outputs": {
        "tiny-q8_0.gguf": {"kind": "variant", "size": "big"}}}))
    result = CliRunner().invoke(main, ["build", "-c", str(cfg)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "manifest.json is corrupt; delete it" in result.output and len(result.output.strip().splitlines()) == 1


def _shape(value):
    """The keys of a JSON value, nested, with the type of every leaf."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_this_version_writes_the_keys_b2599d8_wrote(tmp_path, tiny_gguf, calibration_text):
    # The ladder of tiny-b2599d8.json, built again: every entry has the same keys, nested, with values
    # of the same types (the values themselves carry this machine's times and engine build).
    model = tmp_path / "tiny-f16.gguf"
    shutil.copy(tiny_gguf, model)
    path = write_config(tmp_path, f"""
source:
  path: {model}
target:
  repo: me/tiny
card:
  model_name: tiny
imatrix:
  calibration:
    path: {calibration_text}
    name: tiny calibration
  ctx: 64
  chunks: 3
variants:
  - name: f16
    type: F16
  - name: q8_0
    type: Q8_0
    description: eight bits, the reference of the small files
  - name: q4_0
    type: Q4_0
    output: Q8_0
  - name: iq2_xxs
    type: IQ2_XXS
""")
    cfg = load_config(path)
    build(cfg, threads=2)
    work = WorkDir(cfg.workdir)
    ensure_shards(work, "tiny-f16.gguf", (work.out / "tiny-f16.gguf").stat().st_size // 2 + 4096)
    new = json.loads((cfg.workdir / "manifest.json").read_text())["outputs"]
    old = json.loads((FIXTURES / "tiny-b2599d8.json").read_text())["outputs"]
    assert _shape(new) == _shape(old)
    assert new["tiny-q4_0.gguf"]["output"] == old["tiny-q4_0.gguf"]["output"] == "Q8_0"
    assert new["tiny.imatrix.gguf"]["calibration"] == old["tiny.imatrix.gguf"]["calibration"]
