"""Make card HTML safe to open: the preview shows an upstream card, which is someone else's HTML.

The Hub renders a card's raw HTML through an allowlist, so nothing in an upstream README runs
there; the preview does the same before the page is written. The work is done by nh3 (bindings
to the Rust ``ammonia`` sanitizer), which parses with html5ever, an HTML5-spec parser: it reads
mixed-case tags, entities in URLs, unclosed and misnested tags the way a browser does, and writes
the tree back out as well-formed HTML, so what it checked is what the browser gets.

Kept: structure and text (headings, paragraphs, lists, tables, code, details/summary, quotes),
links and images with http(s), mailto (links only) or relative URLs, ``data:image/...`` images.
Dropped with their content: script, style, iframe, object, embed, form and everything else not
listed (svg, math, template, noscript...). Dropped attributes: every event handler (``on*``),
``style``, ``class``, ``id`` and any other attribute not listed per tag.
"""

from __future__ import annotations

import re

import nh3

_TEXT = {"p", "br", "hr", "div", "span", "center", "blockquote", "pre", "code", "kbd", "samp", "var",
         "b", "strong", "i", "em", "u", "s", "del", "ins", "strike", "mark", "small", "sub", "sup",
         "abbr", "cite", "q", "dfn", "tt", "wbr", "figure", "figcaption"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_LISTS = {"ul", "ol", "li", "dl", "dt", "dd"}
_TABLES = {"table", "caption", "colgroup", "col", "thead", "tbody", "tfoot", "tr", "th", "td"}
ALLOWED_TAGS = frozenset(_TEXT | _HEADINGS | _LISTS | _TABLES | {"a", "img", "details", "summary"})

_ALIGNED = {"p", "div", "center", "table", "caption", "col", "colgroup", "thead", "tbody", "tfoot", "tr",
            *_HEADINGS}
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"title", "lang", "dir"},
    **{tag: {"align"} for tag in _ALIGNED},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "align"},
    "th": {"align", "colspan", "rowspan", "scope"},
    "td": {"align", "colspan", "rowspan"},
    "ol": {"start", "type"},
    "details": {"open"},
}
# Elements whose content goes with them: text inside <script> or <style> is code, not prose.
DROPPED_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "form", "template", "noscript",
                                  "svg", "math", "textarea", "select", "button", "noembed", "noframes", "xmp"})
# "data" passes the sanitizer's scheme check only so that _only_image_data can let data: images
# through; every other data: URL is removed there.
URL_SCHEMES = frozenset({"http", "https", "mailto", "data"})
_URL_ATTRIBUTES = {"href", "src"}
_IGNORED_IN_URLS = re.compile(r"[\x00-\x20]")  # browsers drop these (leading, and tabs/newlines anywhere)


def _only_image_data(tag: str, attribute: str, value: str) -> str | None:
    """Keep a data: URL only as an image's source (an image cannot run script); the value or None."""
    if attribute not in _URL_ATTRIBUTES:
        return value
    url = _IGNORED_IN_URLS.sub("", value).lower()
    if not url.startswith("data:"):
        return value
    return value if (tag, attribute) == ("img", "src") and url.startswith("data:image/") else None


def sanitize_html(fragment: str) -> str:
    """``fragment`` with everything that could run, load a frame or restyle the page removed."""
    return nh3.clean(
        fragment, tags=set(ALLOWED_TAGS), clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()}, attribute_filter=_only_image_data,
        url_schemes=set(URL_SCHEMES), strip_comments=True, link_rel="noopener noreferrer",
    )
