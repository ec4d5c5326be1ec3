"""A standalone HTML preview of a rendered card: metadata, markdown body and the chart inline.

For a browser or a CI artifact; it is never published. The page needs nothing beyond itself.
"""

from __future__ import annotations

import html
import re

from hubbot.card.render import RenderedCard
from hubbot.card.upstream import split_front_matter

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 980px;
       margin: 2em auto; padding: 0 1em; color: #1a202c; line-height: 1.5; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #cbd5e0; padding: 4px 8px; }
th { background: #edf2f7; }
tr:nth-child(even) td { background: #f7fafc; }
code { background: #edf2f7; padding: 1px 4px; border-radius: 3px; font-size: 90%; }
pre { background: #f7fafc; border: 1px solid #e2e8f0; padding: 10px; overflow-x: auto; }
pre code { background: none; padding: 0; }
.front-matter { border-left: 4px solid #2b6cb0; }
.chart svg { max-width: 100%; height: auto; border: 1px solid #e2e8f0; }
"""


def card_html(card: RenderedCard, title: str = "model card preview") -> str:
    """The card as one self-contained HTML page (the chart's SVG embedded where the card shows it)."""
    import markdown

    meta, body = split_front_matter(card.text, "rendered card")
    del meta  # shown as the YAML text itself, exactly as published
    yaml_text = card.text.split("---\n", 2)[1]
    rendered = markdown.markdown(body, extensions=["tables", "fenced_code"], output_format="html")
    if card.chart_svg is not None:
        svg = re.sub(r"^<\?xml[^>]*>\s*", "", card.chart_svg)
        pattern = re.compile(r'<img[^>]*src="' + re.escape(card.chart_name) + r'"[^>]*/?>')
        rendered = pattern.sub(lambda _m: f'<div class="chart">{svg}</div>', rendered)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<pre class=\"front-matter\"><code>{html.escape(yaml_text)}</code></pre>\n"
        f"{rendered}\n</body>\n</html>\n"
    )
