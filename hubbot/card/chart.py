"""A size-vs-perplexity chart as a small, deterministic SVG (no plotting library).

Same points in, same bytes out: coordinates are rounded to one decimal and nothing depends on
the clock or the platform's fonts beyond the generic ``sans-serif`` family. The words on the
chart come from the card templates (``ChartLabels``); this module only draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 30, 40, 56
STANDARD_COLOUR, ADAPTIVE_COLOUR, FLOAT_COLOUR, AUTO_COLOUR = "#2b6cb0", "#c05621", "#4a5568", "#2f855a"


@dataclass(frozen=True)
class Point:
    label: str
    size_gb: float
    ppl: float
    kind: str = "standard"  # "standard", "adaptive", "auto" or "float"


@dataclass(frozen=True)
class ChartLabels:
    """The chart's words: its title, the axis labels and a legend entry per point kind."""

    title: str
    x_label: str
    y_label: str
    y_label_log: str  # the y label when the axis is logarithmic
    legend: dict[str, str]


def _nice_step(span: float, target: int) -> float:
    raw = span / max(1, target)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if abs(x - round(x, 1)) < 1e-9 else f"{x:.2f}".rstrip("0").rstrip(".")


def _linear_ticks(lo: float, hi: float, target: int = 6) -> tuple[float, float, list[float]]:
    if hi <= lo:
        hi = lo + 1.0
    step = _nice_step(hi - lo, target)
    start = math.floor(lo / step) * step
    end = math.ceil(hi / step) * step
    n = round((end - start) / step)
    return start, end, [start + i * step for i in range(n + 1)]


def _log_ticks(lo: float, hi: float) -> tuple[float, float, list[float]]:
    ticks = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 10:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo * 0.999 <= v <= hi * 1.001:
                ticks.append(v)
        e += 1
    return lo, hi, ticks


def _marker(kind: str, x: float, y: float, colour: str) -> str:
    """A circle for standard mixes and full precision, a square for layer recipes, a diamond for auto files."""
    if kind == "adaptive":
        return f'<rect x="{round(x - 4.5, 1)}" y="{round(y - 4.5, 1)}" width="9" height="9" fill="{colour}"/>'
    if kind == "auto":
        pts = f"{x},{round(y - 6, 1)} {round(x + 6, 1)},{y} {x},{round(y + 6, 1)} {round(x - 6, 1)},{y}"
        return f'<polygon points="{pts}" fill="{colour}"/>'
    return f'<circle cx="{x}" cy="{y}" r="5" fill="{colour}"/>'


def ppl_size_svg(points: list[Point], labels: ChartLabels) -> str:
    """An SVG scatter chart of perplexity (y) against file size in GB (x), labelled per point."""
    if not points:
        raise ValueError("a chart needs at least one point")
    xs = [p.size_gb for p in points]
    ys = [p.ppl for p in points]
    x0, x1, xticks = _linear_ticks(0.0, max(xs) * 1.05)
    log_y = min(ys) > 0 and max(ys) / min(ys) > 3
    if log_y:
        y0, y1, yticks = _log_ticks(min(ys) / 1.15, max(ys) * 1.15)
        fy = math.log10
    else:
        pad = (max(ys) - min(ys)) * 0.1 or max(ys) * 0.05 or 1.0
        y0, y1, yticks = _linear_ticks(max(0.0, min(ys) - pad), max(ys) + pad)
        fy = float
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    title = labels.title

    def px(x: float) -> float:
        return round(LEFT + (x - x0) / (x1 - x0) * pw, 1)

    def py(y: float) -> float:
        return round(TOP + ph - (fy(y) - fy(y0)) / (fy(y1) - fy(y0)) * ph, 1)

    out = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
         f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">'),
        f'<title>{escape(title)}</title>',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{WIDTH / 2:.1f}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for t in xticks:
        x = px(t)
        out.append(f'<line x1="{x}" y1="{TOP}" x2="{x}" y2="{TOP + ph}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{x}" y="{TOP + ph + 18}" text-anchor="middle">{_fmt(t)}</text>')
    for t in yticks:
        y = py(t)
        out.append(f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + pw}" y2="{y}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{LEFT - 8}" y="{round(y + 4, 1)}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#4a5568"/>')
    out.append(f'<text x="{LEFT + pw / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle">{escape(labels.x_label)}</text>')
    ylabel = escape(labels.y_label_log if log_y else labels.y_label)
    out.append(f'<text x="16" y="{TOP + ph / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {TOP + ph / 2:.1f})">{ylabel}</text>')
    colours = {"standard": STANDARD_COLOUR, "adaptive": ADAPTIVE_COLOUR, "float": FLOAT_COLOUR, "auto": AUTO_COLOUR}
    for i, p in enumerate(sorted(points, key=lambda q: (q.size_gb, q.ppl, q.label))):
        x, y = px(p.size_gb), py(p.ppl)
        colour = colours.get(p.kind, STANDARD_COLOUR)
        out.append(_marker(p.kind, x, y, colour))
        # Alternate labels above and below so neighbours on a dense ladder do not overprint.
        dy = -9 if i % 2 == 0 else 17
        anchor = "end" if x > LEFT + pw - 60 else "start"
        dx = -7 if anchor == "end" else 7
        out.append(f'<text x="{round(x + dx, 1)}" y="{round(y + dy, 1)}" text-anchor="{anchor}" '
                   f'font-size="11" fill="{colour}">{escape(p.label)}</text>')
    kinds = [k for k in ("float", "standard", "adaptive", "auto") if any(p.kind == k for p in points)]
    lx = LEFT + pw - 10
    for j, k in enumerate(kinds):
        ly = TOP + 16 + 18 * j
        out.append(_marker(k, lx - 150, ly - 4, colours[k]))
        out.append(f'<text x="{lx - 140}" y="{ly}">{escape(labels.legend[k])}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
