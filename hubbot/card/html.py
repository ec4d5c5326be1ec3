"""A standalone HTML preview of a rendered card: metadata, markdown body and the chart inline.

For a browser or a CI artifact; it is never published. The page needs nothing beyond itself. The
body carries the upstream card, someone else's HTML, so it is sanitized like the Hub sanitizes a
card before it goes into the page (templates/preview.html.j2).
"""

from __future__ import annotations

import re

import jinja2
import markdown
from markupsafe import Markup

from hubbot.card.render import RenderedCard, builtin_template_dir
from hubbot.card.sanitize import sanitize_html

PREVIEW_TEMPLATE = "preview.html.j2"


def _chart_inline(body_html: str, card: RenderedCard) -> str:
    """``body_html`` with the chart's <img> replaced by the chart's own SVG (hubbot drew it, no user markup)."""
    if card.chart_svg is None:
        return body_html
    svg = re.sub(r"^<\?xml[^>]*>\s*", "", card.chart_svg)
    pattern = re.compile(r'<img[^>]*src="' + re.escape(card.chart_name) + r'"[^>]*/?>')
    return pattern.sub(lambda _m: f'<div class="chart">{svg}</div>', body_html)


def card_html(card: RenderedCard, model_name: str | None = None, note: str | None = None) -> str:
    """The card as one self-contained HTML page (the chart's SVG embedded where the card shows it);
    ``note`` (a preview's line on what changed) is shown above it."""
    yaml_text, body = card.text.split("---\n", 2)[1:]  # the front matter shown as published, YAML text and all
    # Alignment as attributes, not style="...": the sanitizer removes every style attribute.
    rendered = markdown.markdown(body, extensions=["tables", "fenced_code"], output_format="html",
                                 extension_configs={"tables": {"use_align_attribute": True}})
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(builtin_template_dir())), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    body_html = Markup(_chart_inline(sanitize_html(rendered), card))
    return env.get_template(PREVIEW_TEMPLATE).render(model_name=model_name, front_matter=yaml_text, body=body_html,
                                                     note=note)
