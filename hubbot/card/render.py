"""The model card: metadata as data, text from Jinja templates, checked before anyone uses it.

The contract the publish stage and ``hubbot card`` call:

- ``render_card(cfg, *, files=None, upstream=None, results=None) -> RenderedCard``
- ``write_card(cfg, out_dir=None, *, files=None, upstream=None, results=None) -> [paths written]``
  (the chart SVG when there are measurements, the records file ``hubbot-results.json``, then
  README.md; each written atomically; default folder: the work directory's out/)
- ``save_card(card, out_dir) -> [paths written]`` for a card already rendered.

``files`` is the list of file names being published (whole files, shards, the imatrix); ``None``
means every output in the manifest. ``upstream`` is the ``UpstreamCard`` from
``card.upstream.load_upstream`` (default: loaded from the config's usual places), so a caller that
also gates the repo by it reads the same card. ``results`` are bench results keyed by file name
(default: what the bench stage stored). ``render(CardInput)`` is the same without a Config.

The same inputs always give byte-identical output: nothing on the card depends on the clock,
the host or dictionary order.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from hubbot.card.chart import ChartLabels, ppl_size_svg
from hubbot.card.data import CHART_NAME, UPSTREAM_END, UPSTREAM_START, build_context, chart_points
from hubbot.card.inputs import CardInput, CardSettings
from hubbot.card.meta import dump_front_matter, front_matter
from hubbot.card.published import RECORDS_NAME, card_records, dump_records
from hubbot.card.records import gather
from hubbot.card.upstream import UpstreamCard
from hubbot.config import Config
from hubbot.errors import CardError
from hubbot.workdir import WorkDir, human_bytes, write_text_atomic

__all__ = ["CARD_NAME", "UPSTREAM_END", "UPSTREAM_START", "RenderedCard", "render", "render_card", "save_card",
           "write_card"]

CARD_NAME = "README.md"
MAIN_TEMPLATE = "README.md.j2"
LABELS_TEMPLATE = "_labels.j2"
# The card names files in code spans and link targets (prose such as the source's origin may
# mention other files); every .gguf named there must be among the published files.
_NAMING_SPANS = re.compile(r"`([^`\n]+)`|\]\(([^)\s]+)\)")
_FILE_MENTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.gguf\b")


def files_named(markdown_text: str) -> list[str]:
    """The .gguf file names in the code spans and link targets of ``markdown_text``, in order."""
    spans = (a or b for a, b in _NAMING_SPANS.findall(markdown_text))
    return list(dict.fromkeys(name for span in spans for name in _FILE_MENTION.findall(span)))


@dataclass
class RenderedCard:
    """A rendered, validated card: README text, the chart (or None) and the files it names."""

    text: str
    chart_svg: str | None
    files_named: list[str] = field(default_factory=list)
    chart_name: str = CHART_NAME
    metadata: dict[str, Any] = field(default_factory=dict)
    records: dict[str, Any] | None = None  # published beside the card (card.published), when rendered from a config


# --- templates -------------------------------------------------------------------------------

def builtin_template_dir() -> Path:
    """The packaged templates (an installed wheel), else the checkout's top-level templates/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent.parent / "templates"):
        if (candidate / MAIN_TEMPLATE).is_file():
            return candidate
    raise CardError("hubbot's card templates are missing from this installation; reinstall hubbot")


def _template_source(settings: CardSettings) -> tuple[list[Path], str]:
    """Search path and main template name: card.template (a file or a folder) first, then the built-ins."""
    builtin = builtin_template_dir()
    path = settings.template_path
    if path is None:
        return [builtin], MAIN_TEMPLATE
    if path.is_dir():
        if not (path / MAIN_TEMPLATE).is_file():
            raise CardError(f"card.template folder {path} has no {MAIN_TEMPLATE}; add one or point at a template file")
        return [path, builtin], MAIN_TEMPLATE
    if not path.is_file():
        raise CardError(f"card.template {settings.template!r} does not exist ({path}); fix the path or remove the key")
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


def render(data: CardInput) -> RenderedCard:
    """Render and validate the card for ``data``."""
    if not data.rows:
        raise CardError("no built variant to put on the card (nothing in the manifest matches the files); "
                        "run `hubbot build` first")
    search_path, main_name = _template_source(data.settings)
    env = make_environment(search_path)
    context = build_context(data)
    meta = front_matter(data.settings, data.upstream, any(r.imatrix for r in context.rows))
    context.front_matter = dump_front_matter(meta)
    points = chart_points(context.rows)
    try:
        labels = env.get_template(LABELS_TEMPLATE).module
        context.title = data.settings.title or str(labels.default_title(data.settings.model_name))
        text = env.get_template(main_name).render(context.as_dict())
        chart_labels = ChartLabels(
            title=str(labels.chart_title(data.settings.model_name)), x_label=labels.chart_x_label,
            y_label=labels.chart_y_label, y_label_log=labels.chart_y_label_log, legend=labels.chart_legend)
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError) as exc:
        raise _template_error(exc, search_path) from None
    chart_svg = None if points is None else ppl_size_svg(points, chart_labels)
    text = _tidy(text)
    names = validate(text, data.published, CHART_NAME if chart_svg else None)
    return RenderedCard(text=text, chart_svg=chart_svg, files_named=names, metadata=meta)


def render_card(cfg: Config, *, files: Iterable[str] | None = None, upstream: UpstreamCard | None = None,
                results: dict[str, dict] | None = None) -> RenderedCard:
    """Render and validate the card for ``files`` (default: every output in the manifest)."""
    if results is None:
        # Imported here: the bench stage pulls in numpy, which a card given its results never needs.
        from hubbot.bench.run import load_results

        results = load_results(cfg)
    data = gather(cfg, files=files, upstream=upstream, results=results)
    card = render(data)
    card.records = card_records(data, WorkDir(cfg.workdir).manifest.entries, results)
    return card


def save_card(card: RenderedCard, out_dir: str | Path) -> list[Path]:
    """Write a rendered card (chart and records first, README.md last) atomically into ``out_dir``; the paths."""
    out = Path(out_dir)
    written = []
    if card.chart_svg is not None:
        # The chart first: a README that shows a chart never lands before the chart does.
        chart = out / card.chart_name
        write_text_atomic(chart, card.chart_svg)
        written.append(chart)
    if card.records is not None:
        records = out / RECORDS_NAME
        write_text_atomic(records, dump_records(card.records))
        written.append(records)
    readme = out / CARD_NAME
    write_text_atomic(readme, card.text)
    written.append(readme)
    return written


def write_card(cfg: Config, out_dir: str | Path | None = None, *, files: Iterable[str] | None = None,
               upstream: UpstreamCard | None = None, results: dict[str, dict] | None = None) -> list[Path]:
    """Render the card and write README.md (and the chart SVG) into ``out_dir`` (default: out/); the paths."""
    card = render_card(cfg, files=files, upstream=upstream, results=results)
    return save_card(card, out_dir if out_dir is not None else WorkDir(cfg.workdir).out)
