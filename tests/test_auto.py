"""recipe: auto: budgets in variants.yaml, the error table through ggml, the allocator, and the whole
path from budget to built file (tiny model for speed, the real Gemma 3 270M for the constraints)."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from support.configs import write_config
from support.paths import DATA_DIR

from hubbot.budget import ggml_quants
from hubbot.budget.allocate import BudgetTooSmall, Option, allocate
from hubbot.budget.calibrate import Coefficients, Probe, bands, fit
from hubbot.budget.choose import compile_overrides
from hubbot.budget.inventory import needs_imatrix
from hubbot.budget.measure import TensorErrors
from hubbot.build.plan import plan_project, render_plan
from hubbot.build.run import build
from hubbot.cli import main
from hubbot.config import load_config
from hubbot.errors import ConfigError
from hubbot.gguf_io.info import open_reader, read_info
from hubbot.workdir import WorkDir

# --- the allocator -----------------------------------------------------------------------------


def _brute_force(options: dict[str, list[Option]], budget: int) -> float | None:
    fits = [c for c in itertools.product(*options.values()) if sum(o.bytes for o in c) <= budget]
    return min((sum(o.cost for o in c) for c in fits), default=None)


def test_allocation_is_optimal_and_never_over_budget():
    rng = random.Random(7)
    for _ in range(200):
        options = {f"t{i}": [Option(f"T{j}", rng.randint(1, 10**6), rng.random()) for j in range(rng.randint(1, 4))]
                   for i in range(rng.randint(1, 5))}
        budget = rng.randint(10**5, 4 * 10**6)
        best = _brute_force(options, budget)
        if best is None:
            with pytest.raises(BudgetTooSmall):
                allocate(options, budget)
            continue
        a = allocate(options, budget)
        assert a.bytes <= budget
        assert a.cost == pytest.approx(best, abs=1e-12)


def test_allocation_is_deterministic_and_fills_the_budget():
    rng = random.Random(3)
    options = {f"blk.{i}.ffn_down.weight": [Option(t, (j + 1) * 100_000 + rng.randint(0, 999), 1.0 / (j + 1) ** 2)
                                            for j, t in enumerate(("IQ2_XXS", "Q3_K", "Q4_K", "Q6_K"))]
               for i in range(40)}
    first = allocate(options, 9_000_000)
    assert allocate(dict(reversed(list(options.items()))), 9_000_000).types() == first.types()
    assert 0.98 * 9_000_000 <= first.bytes <= 9_000_000


def test_overrides_name_exactly_the_chosen_tensors():
    types = {"token_embd.weight": "Q5_0", "blk.0.ffn_down.weight": "Q4_K", "blk.1.ffn_down.weight": "IQ2_XXS",
             "blk.10.ffn_down.weight": "Q4_K", "blk.1.attn_v.weight": "Q6_K"}
    overrides = compile_overrides(types)
    names = list(types) + ["blk.0.attn_v.weight", "blk.100.ffn_down.weight", "output.weight"]
    for name in names:
        hit = next((o.type for o in overrides if re.search(o.pattern, name)), None)
        assert hit == types.get(name), name
    assert len(overrides) == 4  # blocks sharing a role and a type share a pattern


# --- the error table and the fit ---------------------------------------------------------------


def test_error_table_uses_the_bytes_llama_cpp_writes(tmp_path, tiny_gguf):
    """The quantized bytes ggml_quants computes are exactly those llama.cpp's quantizer writes."""
    from hubbot.llama.quantize import QuantizeSpec, quantize

    reader = open_reader(tiny_gguf)
    t = next(x for x in reader.tensors if x.name == "blk.1.ffn_down.weight")
    ne0 = int(t.shape[0])
    rows = np.asarray(t.data).view(np.float16).astype(np.float32).reshape(-1, ne0)
    im = np.linspace(0.5, 2.0, ne0, dtype=np.float32)
    out = tmp_path / "q.gguf"
    for type_name in ("Q4_K", "IQ2_XS", "Q5_0"):
        spec = QuantizeSpec(file_type="Q8_0", overrides=(_override("blk\\.1\\.ffn_down", type_name),))
        quantize(tiny_gguf, out, spec, {"blk.1.ffn_down.weight": im})
        built = next(x for x in open_reader(out).tensors if x.name == "blk.1.ffn_down.weight")
        assert built.tensor_type.name == type_name
        ours = ggml_quants.quantize_rows(type_name, rows, im)
        assert np.array_equal(np.asarray(built.data).view(np.uint8).ravel(), ours), type_name
        back = ggml_quants.roundtrip(type_name, rows, im)
        ref = gguf.quants.dequantize(np.asarray(built.data), gguf.GGMLQuantizationType[type_name])
        assert np.allclose(back, ref.reshape(back.shape), rtol=0, atol=1e-6)


def _override(pattern: str, type_name: str):
    from hubbot.config.recipes import TensorOverride

    return TensorOverride(pattern, type_name)


def test_ggml_refuses_what_would_abort():
    rows = np.ones((2, 640), dtype=np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        ggml_quants.quantize_rows("Q4_K", rows, None)
    with pytest.raises(ValueError, match="importance matrix"):
        ggml_quants.quantize_rows("IQ2_XXS", np.ones((2, 256), dtype=np.float32), None)
    assert needs_imatrix("IQ1_M") and needs_imatrix("IQ2_S") and not needs_imatrix("Q4_K")


def test_fit_reproduces_role_and_band_factors():
    """Probes generated from known factors give those factors back (the additive model's fixed point)."""
    n_blocks = 6
    roles = {"attn_v": 3.0, "ffn_down": 0.5}
    true_bands = [2.0, 0.5, 1.0]
    errors, e = {}, {}
    for b in range(n_blocks):
        for r in roles:
            name = f"blk.{b}.{r}.weight"
            e[name] = 1.0 + 0.1 * b + (0.3 if r == "attn_v" else 0.0)
            errors[name] = TensorErrors(name, (256, 256), True, 100.0, {"Q4_K": e[name]})
    errors["token_embd.weight"] = TensorErrors("token_embd.weight", (256, 320), False, 100.0, {"Q4_K": 2.0})
    band_list = bands(n_blocks, 3)

    def c(name: str) -> float:
        m = re.match(r"blk\.(\d+)\.(\w+)\.weight", name)
        if not m:
            return 0.7
        k = next(i for i, (lo, hi) in enumerate(band_list) if lo <= int(m.group(1)) <= hi)
        return roles[m.group(2)] * true_bands[k]

    probes = [Probe(f"role {r}", {n: "Q4_K" for n in errors if f".{r}." in n}) for r in roles]
    probes.append(Probe("role token_embd", {"token_embd.weight": "Q4_K"}))
    probes += [Probe(f"blocks {lo}-{hi}", {n: "Q4_K" for n in errors if n.startswith("blk.")
                                             and lo <= int(n.split(".")[1]) <= hi}) for lo, hi in band_list]
    for p in probes:
        p.kld = sum(c(n) * e.get(n, 2.0) for n in p.types)
    coef = fit(errors, probes, n_blocks, 3)
    for n in errors:
        assert coef.per_tensor[n] == pytest.approx(c(n), rel=1e-6), n
    assert Coefficients.from_json(json.loads(json.dumps(coef.to_json()))).per_tensor == coef.per_tensor


# --- budgets in variants.yaml ------------------------------------------------------------------

_HEAD = """source: {path: model.gguf}
target: {repo: me/model}
imatrix: {calibration: {path: calib.txt}}
variants:
  - name: q8
    type: Q8_0
"""


def _load(tmp_path: Path, variant: str):
    return load_config(write_config(tmp_path, _HEAD + variant))


@pytest.mark.parametrize("budget, kind, label", [
    ("{like: IQ2_XXS}", "like IQ2_XXS", "IQ2_XXS"),
    ("{like: iq2_xxs, extra: 10%}", "like IQ2_XXS +10%", "IQ2_XXS"),
    ("IQ2_XXS -5%", "like IQ2_XXS -5%", "IQ2_XXS"),
    ("{like: Q4_K_M, extra: +500MB}", "like Q4_K_M +500MB", "Q4_K_M"),
    ("2.6 bpw", "2.6 bpw", "IQ2_S"),
    ("{bpw: 4.6}", "4.6 bpw", "Q4_K_M"),
])
def test_budget_forms(tmp_path, budget, kind, label):
    v = _load(tmp_path, f"  - name: auto\n    recipe: auto\n    budget: {budget}\n").variant("auto")
    assert v.is_auto and v.needs_imatrix
    assert v.budget.describe() == kind
    assert v.type == label


def test_size_budget_needs_a_type_label(tmp_path):
    v = _load(tmp_path, "  - name: auto\n    recipe: auto\n    type: IQ2_XS\n    budget: 9.5GB\n").variant("auto")
    assert v.budget.bytes_for(10**9) == 9_500_000_000 and v.type == "IQ2_XS"
    assert v.budget.bytes_for(8 * 10**9, None) == 9_500_000_000


def test_ladder_gives_one_auto_file_per_standard_mix(tmp_path):
    cfg = _load(tmp_path, "  - name: auto\n    recipe: auto\n    budget: {like: [IQ1_S, IQ2_XXS, Q4_K_M], extra: 1%}\n"
                          "  - name: last\n    type: Q4_0\n")
    assert [v.name for v in cfg.variants] == ["q8", "auto-iq1_s", "auto-iq2_xxs", "auto-q4_k_m", "last"]
    assert [v.budget.describe() for v in cfg.variants[1:4]] == ["like IQ1_S +1%", "like IQ2_XXS +1%", "like Q4_K_M +1%"]
    assert cfg._lines.where(("variants", 4, "type")).endswith(":11")  # lines still point at the right entry


@pytest.mark.parametrize("variant, message", [
    ("    recipe: auto\n", "recipe: auto needs a budget"),
    ("    recipe: auto\n    budget: 2.6\n", "a bare number (2.6) is ambiguous"),
    ("    recipe: auto\n    budget: {bpw: 2, size: 1GB}\n", "exactly one of size, bpw or like"),
    ("    recipe: auto\n    budget: {like: IQ2_XXZ}\n", "did you mean IQ2_XXS"),
    ("    recipe: auto\n    budget: {bpw: 3, extra: 5%}\n", "'extra' goes with 'like'"),
    ("    recipe: auto\n    budget: {like: Q4_0, extra: lots}\n", "neither a percentage"),
    ("    recipe: auto\n    budget: 9.5GB\n", "a size budget needs 'type:'"),
    ("    recipe: auto\n    budget: {bpw: 0}\n", "above 0"),
    ("    recipe: auto\n    budget: 2 bpw\n    layers: [{blocks: all, type: Q4_K}]\n", "remove 'layers'"),
    ("    recipe: auto\n    budget: 2 bpw\n    imatrix: off\n", "importance matrix"),
    ("    type: Q4_0\n    budget: 2 bpw\n", "only applies to 'recipe: auto'"),
    ("    recipe: atuo\n    budget: 2 bpw\n", "did you mean auto"),
    ("    recipe: auto\n    budget: {like: []}\n", "is empty"),
])
def test_bad_budgets_are_one_line_errors(tmp_path, variant, message):
    path = write_config(tmp_path, _HEAD + "  - name: auto\n" + variant)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert message in text and "\n" not in text
    assert re.match(rf"^{re.escape(str(path))}:\d+: ", text), text
    out = CliRunner().invoke(main, ["plan", "-c", str(path)])
    assert out.exit_code != 0 and out.output.strip().count("\n") == 0 and message in out.output


def test_sensitivity_settings_are_checked(tmp_path):
    path = write_config(tmp_path, _HEAD.replace("variants:", "sensitivity: {types: [Q4_K, Q9_K]}\nvariants:"))
    with pytest.raises(ConfigError, match="unknown tensor type 'Q9_K'"):
        load_config(path)


# --- budget to file: the tiny model (fast) ------------------------------------------------------


def _tiny_project(folder: Path, model: Path, variants: str) -> Path:
    return write_config(folder, f"""
source: {{path: {model}}}
target: {{repo: me/tiny}}
imatrix:
  calibration: {{path: {DATA_DIR / 'calibration.txt'}}}
  ctx: 64
  chunks: 4
sensitivity: {{sample: 16384, probe_chunks: 2, bands: 2}}
variants:
{variants}""")


TINY_VARIANTS = """  - {name: q4, type: Q4_K_M}
  - {name: auto-q4, recipe: auto, budget: {like: Q4_K_M}}
  - {name: auto-small, recipe: auto, budget: 3 bpw}
"""


@pytest.fixture(scope="module")
def tiny_auto(tmp_path_factory):
    from hubbot.testing.tinymodel import write_tiny_gguf

    folder = tmp_path_factory.mktemp("tiny-auto")
    model = write_tiny_gguf(folder / "tiny.gguf")
    cfg = load_config(_tiny_project(folder, model, TINY_VARIANTS))
    plan = plan_project(cfg, measure=True)
    results = {r.name: r for r in build(cfg)}
    return folder, model, cfg, plan, results


def _auto_checks(cfg, plan: dict, slack: float = 0.02) -> None:
    """What every auto file must satisfy: plan = built file (types and size), budget met, constraints."""
    for v in plan["variants"]:
        if not v["auto"]:
            continue
        path = cfg.workdir / "out" / v["file"]
        info = read_info(path)
        built = {t.name: t.type for t in info.tensors}
        source = read_info(cfg.resolve_path(cfg.source.path))
        assert path.stat().st_size <= v["auto"]["budget"], v["name"]  # never over
        assert path.stat().st_size >= (1 - slack) * v["auto"]["budget"], v["name"]  # and close to it
        assert abs(path.stat().st_size - v["size"]) < 64 * 1024  # the plan's size is the file's, up to metadata
        planned = {r: types for r, types in v["blocks"].items()}
        for name, t in built.items():
            if m := re.match(r"^blk\.(\d+)\.(\w+)\.weight$", name):
                assert planned[m.group(2)][int(m.group(1))] == t, name  # no fallback surprise
        for t in source.tensors:
            new = built[t.name]
            if len(t.shape) < 2:
                assert new == t.type, t.name  # norms and vectors stay as llama.cpp keeps them
            else:
                assert t.shape[0] % ggml_quants.block_size(new) == 0, (t.name, new)  # rows hold whole blocks
        entry = WorkDir(cfg.workdir).manifest.get(v["file"])
        assert entry.fallbacks == {} and entry.auto.budget == v["auto"]["budget"]


def test_tiny_auto_files_match_their_plan_and_budget(tiny_auto):
    folder, model, cfg, plan, results = tiny_auto
    assert all(r.status == "built" for r in results.values())
    _auto_checks(cfg, plan, slack=0.025)  # a 1 MB file: the metadata margin is a larger share
    text = render_plan(plan)
    assert "budget like Q4_K_M" in text and "predicted mean KLD" in text and "token_embd" in text
    small = next(v for v in plan["variants"] if v["name"] == "auto-small")
    assert small["auto"]["predicted_kld"] > next(v for v in plan["variants"] if v["name"] == "auto-q4")["auto"]["predicted_kld"]


def test_a_build_job_plans_from_the_imatrix_job_s_artifacts_without_measuring(tiny_auto, tmp_path):
    # The release measures the sensitivity once (imatrix job: `plan --measure`) and hands
    # cache/imatrix and cache/budget/*.json to each build job, as release.yml's artifacts do.
    import shutil

    folder, model, cfg, plan, _ = tiny_auto
    job = load_config(_tiny_project(tmp_path, model, TINY_VARIANTS))
    for sub, pattern in (("imatrix", "*"), ("budget", "*.json")):
        dest = job.workdir / "cache" / sub
        dest.mkdir(parents=True)
        for f in (cfg.workdir / "cache" / sub).glob(pattern):
            shutil.copy2(f, dest / f.name)
    again = plan_project(job)  # measure=False: nothing is computed, only read
    want = {v["name"]: v["auto"] for v in plan["variants"] if v["auto"]}
    got = {v["name"]: v["auto"] for v in again["variants"] if v["name"] in want}
    assert got == want and all(a["predicted_kld"] is not None for a in got.values())


def test_a_budget_change_rebuilds_only_that_variant(tiny_auto):
    folder, model, cfg, plan, _ = tiny_auto
    cache = cfg.workdir / "cache" / "budget"
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    changed = load_config(_tiny_project(folder, model, TINY_VARIANTS.replace("3 bpw", "3.5 bpw")))
    results = {r.name: r.status for r in build(changed)}
    assert results == {"q4": "unchanged", "auto-q4": "unchanged", "auto-small": "built"}
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")} == before  # sensitivity reused, not re-measured
    again = plan_project(changed)
    assert all(v["up_to_date"] for v in again["variants"])
    _auto_checks(changed, again, slack=0.025)


@pytest.mark.parametrize("budget, message", [("0.5 bpw", "ask for at least"), ("1GB", "ask for at most")])
def test_impossible_budgets_say_what_would_fit(tiny_auto, budget, message):
    folder, model, *_ = tiny_auto
    extra = "    type: Q4_0\n" if budget.endswith("GB") else ""
    path = _tiny_project(folder / "bad", model, f"  - name: bad\n    recipe: auto\n    budget: {budget}\n{extra}")
    out = CliRunner().invoke(main, ["plan", "-c", str(path)])
    assert out.exit_code != 0
    line = out.output.strip()
    assert "\n" not in line and message in line and re.search(r"variants\.yaml:\d+:", line), line


# --- the real model --------------------------------------------------------------------------------


@pytest.mark.slow
def test_auto_on_the_real_model_honours_every_constraint(tmp_path, gemma_bf16):
    """Gemma 3 270M: 640-wide rows (no K- or IQ-types), tied embeddings, F32 norms; two budgets."""
    cfg = load_config(write_config(tmp_path, f"""
source: {{path: {gemma_bf16}}}
target: {{repo: me/gemma}}
card: {{model_name: gemma-3-270m}}
imatrix:
  calibration: {{path: {DATA_DIR / 'calibration.txt'}}}
  chunks: 2
sensitivity: {{sample: 16384, probe_chunks: 2, bands: 2}}
variants:
  - {{name: iq2_xxs, recipe: auto, budget: {{like: IQ2_XXS}}}}
  - {{name: six, recipe: auto, budget: 6 bpw}}
"""))
    plan = plan_project(cfg, measure=True)
    build(cfg)
    _auto_checks(cfg, plan)
    info = read_info(cfg.workdir / "out" / "gemma-3-270m-iq2_xxs.gguf")
    assert "output.weight" not in info.tensor_types()  # tied: the token embedding is also the output
    std = plan_project(load_config(write_config(tmp_path / "std", f"""
source: {{path: {gemma_bf16}}}
target: {{repo: me/gemma}}
imatrix: {{file: {cfg.workdir / 'out' / 'gemma-3-270m.imatrix.gguf'}}}
variants: [{{name: s, type: IQ2_XXS}}]
""")))["variants"][0]
    auto = plan["variants"][0]
    assert abs(auto["auto"]["budget"] - std["size"]) < 64 * 1024  # like: the standard mix's size
    assert auto["auto"]["predicted_kld"] < auto["auto"]["standard_predicted_kld"]


# --- the card ----------------------------------------------------------------------------------------


def test_card_shows_auto_files_as_their_own_series(tmp_path):
    """An auto file on the card: the method in prose, what it raised and lowered, its comparison
    with the standard mix and the layer recipe of its type, and its own series in the chart."""
    import shutil

    from hubbot.card.render import render_card

    fixtures = Path(__file__).parent / "fixtures" / "card"
    text = (fixtures / "small-variants.yaml").read_text()
    text += "  - name: auto-iq2_xxs\n    recipe: auto\n    budget: {like: IQ2_XXS}\n"
    (tmp_path / "variants.yaml").write_text(text)
    shutil.copy(fixtures / "gated-upstream.md", tmp_path / "gated-upstream.md")
    cfg = load_config(tmp_path / "variants.yaml")
    manifest = json.loads((fixtures / "small-manifest.json").read_text())
    results = json.loads((fixtures / "small-results.json").read_text())
    std = manifest["outputs"]["tiny-model-iq2_xxs.gguf"]
    name = "tiny-model-auto-iq2_xxs.gguf"
    auto = {"budget": std["size"], "budget_text": "like IQ2_XXS", "size": std["size"] - 1000,
            "predicted_kld": 0.05, "standard_predicted_kld": 0.4,
            "changes": [{"role": "ffn_down", "raised": [{"block": 0, "from": "IQ2_XXS", "to": "Q4_K"},
                                                        {"block": 1, "from": "IQ2_XXS", "to": "Q4_K"},
                                                        {"block": 3, "from": "IQ2_XXS", "to": "Q4_K"}], "lowered": []},
                        {"role": "token_embd", "raised": [], "lowered": [{"block": None, "from": "Q8_0", "to": "Q5_0"}]}]}
    manifest["outputs"][name] = {**std, "file": name, "variant": "auto-iq2_xxs", "sha256": "ef" * 32,
                                 "size": std["size"] - 1000, "auto": auto}
    results[name] = {**results["tiny-model-iq2_xxs.gguf"], "file": name, "sha256": "ef" * 32, "size": std["size"] - 1000,
                     "kld": {**results["tiny-model-iq2_xxs.gguf"]["kld"], "mean": 0.1}}
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "manifest.json").write_text(json.dumps(manifest))
    card = render_card(cfg, results=results)
    section = card.text.split("## Files sized to a budget")[1].split("\n## ")[0]
    assert "**`tiny-model-auto-iq2_xxs.gguf`**: budget `like IQ2_XXS`" in section
    assert "| ffn_down | 0-1, 3 | IQ2_XXS | Q4_K | more bits |" in section
    assert "| token_embd | — | Q8_0 | Q5_0 | fewer bits |" in section
    rows = [line for line in section.splitlines() if line.startswith("| IQ2_XXS |")]
    assert [r.split("|")[2].split("`")[0].strip() for r in rows] == ["standard mix", "layer recipe", "auto"]
    assert "auto (size budget)" in card.chart_svg and "<polygon" in card.chart_svg
    layer = card.text.split("## Layer-adaptive")[1].split("\n## ")[0]
    assert "auto-iq2_xxs" not in layer  # the layer recipes' standard-vs-adaptive pairs ignore auto files


def test_a_quantized_probe_base_is_measured_once_and_taken_off(tmp_path, tiny_gguf):
    """sensitivity.probe_base: Q8_0 (for big models): one baseline probe, subtracted from the others."""
    path = _tiny_project(tmp_path, tiny_gguf, "  - {name: a, recipe: auto, budget: 4 bpw}\n")
    path.write_text(path.read_text().replace("bands: 2}", "bands: 2, probe_base: Q8_0}"))
    cfg = load_config(path)
    plan = plan_project(cfg, measure=True)
    assert plan["variants"][0]["auto"]["predicted_kld"] > 0
    cache = cfg.workdir / "cache" / "budget"
    raw = json.loads(next(cache.glob("*.probes.json")).read_text())["probes"]
    fitted = json.loads(next(cache.glob("*.sensitivity.json")).read_text())["coefficients"]["probes"]
    base = raw.pop("baseline")["kld"]
    assert base > 0 and {p["name"] for p in fitted} == set(raw)
    for p in fitted:
        assert p["measured"] == pytest.approx(max(0.0, raw[p["name"]]["kld"] - base))


def test_plan_never_measures_unless_asked(tmp_path, tiny_gguf):
    path = _tiny_project(tmp_path, tiny_gguf, "  - {name: a, recipe: auto, budget: 4 bpw}\n")
    out = CliRunner().invoke(main, ["plan", "-c", str(path)])
    assert out.exit_code == 0, out.output
    assert "note: the sensitivity is not measured yet" in out.output and "to build" in out.output
    assert not (tmp_path / ".hubbot" / "cache" / "budget").exists() or not list((tmp_path / ".hubbot" / "cache" / "budget").glob("*.json"))
