"""The model card: metadata as data, text from Jinja templates, checked before anyone uses it.

The contract the publish stage calls:

- ``render_card(cfg, *, upstream_text=None, files=None) -> RenderedCard(text, chart_svg, files_named)``
- ``write_card(cfg, out_dir=None, *, upstream_text=None, files=None) -> [paths written]`` (README.md,
  plus the chart SVG when there are measurements), each written atomically.

``files`` is the list of file names being published (whole files, shards, the imatrix); ``None``
means every output in the manifest. The same inputs always give byte-identical output: nothing
on the card depends on the clock, the host or dictionary order.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from hubbot.card import data as card_data
from hubbot.card.chart import Point, ppl_size_svg
from hubbot.card.upstream import UpstreamCard, load_upstream
from hubbot.config import Config
from hubbot.errors import CardError
from hubbot.workdir import WorkDir, human_bytes, write_text_atomic

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
MAIN_TEMPLATE = "README.md.j2"
UPSTREAM_START = "<!-- hubbot:upstream-card:start -->"
UPSTREAM_END = "<!-- hubbot:upstream-card:end -->"
# The card names files in code spans and link targets (prose such as the source's origin may
# mention other files); every .gguf named there must be among the published files.
_NAMING_SPANS = re.compile(r"`([^`\n]+)`|\]\(([^)\s]+)\)")
_FILE_MENTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.gguf\b")


def files_named(markdown_text: str) -> list[str]:
    """The .gguf file names in the code spans and link targets of ``markdown_text``, in order."""
    spans = (a or b for a, b in _NAMING_SPANS.findall(markdown_text))
    return _unique(name for span in spans for name in _FILE_MENTION.findall(span))


@dataclass
class RenderedCard:
    """A rendered, validated card: README text, the chart (or None) and the files it names."""

    text: str
    chart_svg: str | None
    files_named: list[str] = field(default_factory=list)
    chart_name: str = card_data.CHART_NAME
    metadata: dict[str, Any] = field(default_factory=dict)


# --- templates -------------------------------------------------------------------------------

def builtin_template_dir() -> Path:
    """The packaged templates (an installed wheel), else the checkout's top-level templates/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent.parent / "templates"):
        if (candidate / MAIN_TEMPLATE).is_file():
            return candidate
    raise CardError("hubbot's card templates are missing from this installation; reinstall hubbot")


def _template_source(cfg: Config) -> tuple[list[Path], str]:
    """Search path and main template name: card.template (a file or a folder) first, then the built-ins."""
    builtin = builtin_template_dir()
    if not cfg.card.template:
        return [builtin], MAIN_TEMPLATE
    path = cfg.resolve_path(cfg.card.template)
    if path.is_dir():
        if not (path / MAIN_TEMPLATE).is_file():
            raise CardError(f"card.template folder {path} has no {MAIN_TEMPLATE}; add one or point at a template file")
        return [path, builtin], MAIN_TEMPLATE
    if not path.is_file():
        raise CardError(f"card.template {cfg.card.template!r} does not exist ({path}); fix the path or remove the key")
    return [path.parent, builtin], path.name


def _filters() -> dict[str, Any]:
    def size(n, signed: bool = False) -> str:
        if n is None:
            return "–"
        text = human_bytes(abs(n))
        return (("+" if n >= 0 else "−") + text) if signed else text

    def num(x, digits: int = 2) -> str:
        return "–" if x is None else f"{x:.{digits}f}"

    def pct(x, signed: bool = True, digits: int = 2) -> str:
        if x is None:
            return "–"
        text = f"{abs(x) * 100:.{digits}f}%"
        return ("+" if x >= 0 else "−") + text if signed else text

    return {"size": size, "num": num, "pct": pct}


def make_environment(search_path: list[Path]) -> jinja2.Environment:
    """Markdown templates: strict undefined names, no autoescaping, tidy block whitespace."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path]),
        undefined=jinja2.StrictUndefined, autoescape=False,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters.update(_filters())
    return env


def _template_error(exc: Exception, search_path: list[Path]) -> CardError:
    """A one-line CardError naming the template file and line of a Jinja failure."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = exc.filename or exc.name or "template"
        return CardError(f"{where}:{exc.lineno}: template syntax error: {exc.message}; fix the template")
    if isinstance(exc, jinja2.TemplateNotFound):
        return CardError(f"card template {exc.name!r} not found in {', '.join(map(str, search_path))}")
    roots = [str(p.resolve()) for p in search_path]
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if any(str(Path(f.filename).resolve()).startswith(r) for r in roots if Path(f.filename).exists())]
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "card template"
    what = "undefined variable" if isinstance(exc, jinja2.UndefinedError) else "template error"
    return CardError(f"{where}: {what}: {exc}; fix the template or the data it expects")


# --- metadata --------------------------------------------------------------------------------

def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def front_matter(cfg: Config, upstream: UpstreamCard | None, uses_imatrix: bool) -> dict[str, Any]:
    """The card's YAML metadata, in a fixed key order; the upstream licence and gate keys copied exactly."""
    up = upstream.meta if upstream else {}
    meta: dict[str, Any] = dict(upstream.kept_keys) if upstream else {}
    base = cfg.source.upstream_repo
    if base:
        meta["base_model"] = base
        meta["base_model_relation"] = "quantized"
    if cfg.card.quantized_by:
        meta["quantized_by"] = cfg.card.quantized_by
    meta["library_name"] = "gguf"
    pipeline = cfg.card.pipeline_tag or up.get("pipeline_tag")
    if pipeline:
        meta["pipeline_tag"] = pipeline
    language = cfg.card.language or up.get("language")
    if language:
        meta["language"] = language
    up_tags = up.get("tags") or []
    up_tags = [up_tags] if isinstance(up_tags, str) else list(up_tags)
    meta["tags"] = _unique([*map(str, up_tags), *cfg.card.tags, "gguf", *(["imatrix"] if uses_imatrix else []), "quantized"])
    for key, value in cfg.card.extra.items():
        if upstream and key in upstream.kept_keys and upstream.kept_keys[key] != value:
            raise CardError(f"card.extra.{key} would change the upstream card's {key}; remove it (hubbot keeps the upstream value)")
        meta[key] = value
    return meta


def dump_front_matter(meta: dict[str, Any]) -> str:
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


# --- the context the templates see -------------------------------------------------------------

def _load_results(cfg: Config) -> dict[str, dict]:
    try:
        from hubbot.bench.run import load_results
    except ImportError:  # the bench stage is optional for a card
        return {}
    return load_results(cfg)


def _chart(cfg: Config, rows: list[dict]) -> str | None:
    measured = [r for r in rows if r["result"] and r["result"]["ppl"] and r["size"]]
    if len(measured) < 2:
        return None
    points = [Point(r["name"], r["size"] / 1e9, r["result"]["ppl"],
                    "float" if r["is_float"] else "adaptive" if r["adaptive"] else "auto" if r["auto"] else "standard")
              for r in measured]
    return ppl_size_svg(points, f"{cfg.model_name}: perplexity against file size")


def build_context(cfg: Config, upstream: UpstreamCard | None, files: list[str] | None,
                  manifest: dict[str, dict], results: dict[str, dict], work: WorkDir) -> tuple[dict, str | None]:
    """(template context, chart SVG or None) from the real variants and measurements."""
    rows = card_data.collect_rows(cfg, manifest, results, files, work)
    if not rows:
        raise CardError("no built variant to put on the card (nothing in the manifest matches the files); "
                        "run `hubbot build` first")
    imatrix = card_data.imatrix_file(manifest, files)
    measured = [r for r in rows if r["result"]]
    chart_svg = _chart(cfg, rows)
    ref_row = next((r for r in rows if r["result"] and r["result"]["is_reference"]), None)
    quality = None
    if measured:
        quality = {
            "rows": measured,
            "has_delta": ref_row is not None,
            "has_kld": any(r["result"]["kld_mean"] is not None for r in measured),
            "has_speed": any(r["result"]["tg"] is not None for r in measured),
        }
    adaptive_rows = [r for r in rows if r["adaptive"]]
    pairs = card_data.adaptive_pairs(rows)
    adaptive = {"variants": adaptive_rows, "pairs": pairs,
                "has_speed": bool(pairs) and all(p["has_speed"] for p in pairs)} if adaptive_rows else None
    auto_rows = [r for r in rows if r["auto"]]
    auto = {"variants": auto_rows, "comparisons": card_data.auto_comparisons(rows),
            "has_kld": any(r["result"] and r["result"]["kld_mean"] is not None for r in auto_rows)} if auto_rows else None
    picks = []
    if ref_row is not None:
        for limit in (0.01, 0.05):
            within = [r for r in measured if r is not ref_row and r["result"]["d_ppl"] is not None
                      and r["result"]["d_ppl"] <= limit and r["size"] and r["size"] < (ref_row["size"] or 0)]
            best = min(within, key=lambda r: r["size"], default=None)
            if best is not None and best not in [p["row"] for p in picks]:
                picks.append({"limit": limit, "row": best})
    tagged = [r for r in rows if r["tag"]]
    example = next((r for r in tagged if r["type"].startswith("Q4_K")), None) or next(
        (r for r in tagged if not r["is_float"]), None) or (tagged[0] if tagged else None)
    repo = cfg.target.repo
    base = cfg.source.upstream_repo
    gated = bool(upstream and upstream.gated) or cfg.target.gated in ("auto", "manual")
    upstream_ctx = None
    if upstream is not None and upstream.body.strip():
        upstream_ctx = {"repo": base, "url": card_data.HUB_URL.format(base) if base else None,
                        "body": upstream.body.rstrip("\n"), "start_marker": UPSTREAM_START, "end_marker": UPSTREAM_END}
    context = {
        "front_matter": "",  # filled by render_card
        "title": cfg.card.title or f"{cfg.model_name} GGUF",
        "model_name": cfg.model_name, "repo": repo,
        "upstream_repo": base, "upstream_url": card_data.HUB_URL.format(base) if base else None,
        "quantized_by": cfg.card.quantized_by,
        "gated": gated,
        "license_link": (upstream.meta.get("license_link") if upstream else None),
        "gen": card_data.generation(cfg, rows, manifest, imatrix),
        "bench": card_data.bench_settings(results, card_data.reference_file(results)) if measured else None,
        "rows": rows, "quality": quality, "adaptive": adaptive, "auto": auto,
        "chart": {"file": card_data.CHART_NAME} if chart_svg else None,
        "formats": card_data.formats_present(rows), "picks": picks,
        "imatrix_file": imatrix,
        "usage": {"repo": repo, "example": example, "tagged": tagged, "untagged": [r for r in rows if not r["tag"]]},
        "upstream": upstream_ctx,
    }
    return context, chart_svg


# --- render, check, write ----------------------------------------------------------------------

def _tidy(text: str) -> str:
    """Collapse runs of blank lines in hubbot's own part; the upstream part is left byte for byte."""
    head, sep, tail = text.partition(UPSTREAM_START)
    head = re.sub(r"\n{3,}", "\n\n", head)
    if not sep:
        return head.rstrip("\n") + "\n"
    return head + sep + tail


def validate(text: str, files: Iterable[str], chart_name: str | None) -> list[str]:
    """Parse the card back (YAML, huggingface_hub.ModelCard) and check every file it names; the names."""
    from huggingface_hub import ModelCard

    if not text.startswith("---\n"):
        raise CardError("the rendered card does not start with YAML front matter; the main template must begin with '---'")
    try:
        yaml.safe_load(text.split("---\n", 2)[1])
        card = ModelCard(text, ignore_metadata_errors=False)
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # either parser failing means the card is unusable
        raise CardError(f"the rendered card does not parse back ({type(exc).__name__}: {exc}); fix the template") from None
    if not isinstance(card.data.to_dict(), dict):
        raise CardError("the rendered card's metadata is not a mapping; fix the template")
    own = text.split(UPSTREAM_START, 1)[0]
    named = files_named(own)
    available = set(files)
    missing = [n for n in named if n not in available]
    if missing:
        raise CardError(f"the card names {missing[0]}, which is not among the files being published; "
                        "build it or remove it from the template")
    if chart_name and chart_name not in own:
        raise CardError(f"the card does not embed its chart {chart_name}; the template must show it")
    return named


def _published_names(manifest: dict[str, dict], files: list[str] | None) -> list[str]:
    return list(manifest) if files is None else list(files)


def render_card(cfg: Config, *, upstream_text: str | None = None, files: Iterable[str] | None = None,
                upstream_path: str | Path | None = None, results: dict[str, dict] | None = None) -> RenderedCard:
    """Render and validate the card for ``files`` (default: every output in the manifest)."""
    work = WorkDir(cfg.workdir)
    manifest = work.manifest.entries
    files = None if files is None else list(files)
    upstream = load_upstream(cfg, path=upstream_path, text=upstream_text)
    results = _load_results(cfg) if results is None else results
    context, chart_svg = build_context(cfg, upstream, files, manifest, results, work)
    meta = front_matter(cfg, upstream, any(r["imatrix"] for r in context["rows"]))
    context["front_matter"] = dump_front_matter(meta)
    search_path, main_name = _template_source(cfg)
    env = make_environment(search_path)
    try:
        text = env.get_template(main_name).render(context)
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError) as exc:
        raise _template_error(exc, search_path) from None
    text = _tidy(text)
    names = validate(text, _published_names(manifest, files), card_data.CHART_NAME if chart_svg else None)
    return RenderedCard(text=text, chart_svg=chart_svg, files_named=names, metadata=meta)


def save_card(card: RenderedCard, out_dir: str | Path) -> list[Path]:
    """Write a rendered card (chart first, README.md last) atomically into ``out_dir``; the paths."""
    out = Path(out_dir)
    written = []
    if card.chart_svg is not None:
        # The chart first: a README that shows a chart never lands before the chart does.
        chart = out / card.chart_name
        write_text_atomic(chart, card.chart_svg)
        written.append(chart)
    readme = out / CARD_NAME
    write_text_atomic(readme, card.text)
    written.append(readme)
    return written


def write_card(cfg: Config, out_dir: str | Path | None = None, *, upstream_text: str | None = None,
               files: Iterable[str] | None = None, upstream_path: str | Path | None = None,
               results: dict[str, dict] | None = None) -> list[Path]:
    """Render the card and write README.md (and the chart SVG) into ``out_dir`` (default: out/); the paths."""
    card = render_card(cfg, upstream_text=upstream_text, files=files, upstream_path=upstream_path, results=results)
    return save_card(card, out_dir if out_dir is not None else WorkDir(cfg.workdir).out)
