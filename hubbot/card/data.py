"""What the templates see: a ``CardContext`` derived from a ``CardInput``.

Everything here is data (typed values of numbers and strings): the Jinja templates decide all
wording and formatting. The field names of ``CardContext`` are the names a template (also a
user's own, through ``card.template``) can use.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from hubbot import __version__
from hubbot.card.auto import AutoSection, auto_section
from hubbot.card.chart import Point
from hubbot.card.inputs import BenchSettings, CardInput, Engine, ImatrixFile, MissingVariant, VariantRow

CHART_NAME = "ppl-vs-size.svg"
HUB_URL = "https://huggingface.co/{}"
UPSTREAM_START = "<!-- hubbot:upstream-card:start -->"
UPSTREAM_END = "<!-- hubbot:upstream-card:end -->"
# The "smallest file within X of the reference's perplexity" picks.
PICK_LIMITS = (0.01, 0.05)


@dataclass(frozen=True)
class AdaptivePair:
    """A measured adaptive variant and the measured standard variant of the same base type."""

    adaptive: VariantRow
    standard: VariantRow
    d_ppl: float | None
    d_size: int
    d_size_rel: float | None
    has_speed: bool


@dataclass(frozen=True)
class AdaptiveSection:
    variants: list[VariantRow]
    pairs: list[AdaptivePair]
    has_speed: bool


@dataclass
class FormatGroup:
    """One file type on the card, with its variants in ladder order."""

    type: str
    variants: list[str]
    bpw_min: float | None = None
    bpw_max: float | None = None
    has_adaptive: bool = False


@dataclass(frozen=True)
class Pick:
    limit: float
    row: VariantRow


@dataclass(frozen=True)
class QualityTable:
    rows: list[VariantRow]  # measured rows, and in a preview the planned ones (no result yet)
    has_delta: bool
    has_kld: bool
    has_speed: bool
    has_planned: bool = False


@dataclass(frozen=True)
class GenerationImatrix:
    dataset: str | None
    chunks: int | None
    ctx: int | None


@dataclass(frozen=True)
class Generation:
    """How the files were made: engines, source weights, the importance matrix."""

    engines: list[Engine]
    hubbot_version: str
    source_repo: str | None
    source_revision: str | None
    source_origin: str | None
    source_sha256: str | None
    imatrix: GenerationImatrix | None


@dataclass(frozen=True)
class Usage:
    repo: str
    example: VariantRow | None
    tagged: list[VariantRow]
    untagged: list[VariantRow]


@dataclass(frozen=True)
class Chart:
    file: str


@dataclass(frozen=True)
class UpstreamSection:
    repo: str | None
    url: str | None
    body: str
    start_marker: str
    end_marker: str


@dataclass
class CardContext:
    """The names a card template sees."""

    front_matter: str
    title: str
    model_name: str
    repo: str
    upstream_repo: str | None
    upstream_url: str | None
    quantized_by: str | None
    gated: bool
    license_link: str | None
    gen: Generation
    bench: BenchSettings | None
    rows: list[VariantRow]
    quality: QualityTable | None
    adaptive: AdaptiveSection | None
    auto: AutoSection | None
    chart: Chart | None
    formats: list[FormatGroup]
    picks: list[Pick]
    imatrix_file: ImatrixFile | None
    usage: Usage
    upstream: UpstreamSection | None
    # Ladder variants not on the card (a release whose build job failed); empty when the ladder is complete.
    missing_variants: list[MissingVariant]

    def as_dict(self) -> dict[str, Any]:
        """The template namespace (one level deep: the values stay typed)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _assign_tags(rows: list[VariantRow]) -> None:
    """The ``repo:TAG`` each file answers to: its one quant label, when no other file shares it."""
    counts: dict[str, int] = {}
    for r in rows:
        for label in r.labels:
            counts[label] = counts.get(label, 0) + 1
    for r in rows:
        if len(r.labels) == 1 and counts[r.labels[0]] == 1:
            r.tag = r.labels[0]


def _reference_row(rows: list[VariantRow]) -> VariantRow | None:
    return next((r for r in rows if r.result and r.result.is_reference), None)


def _apply_reference(rows: list[VariantRow], ref: VariantRow | None) -> None:
    """Each measured row's perplexity change from the reference's."""
    base = ref.result.ppl if ref is not None and ref.result else None
    if base:
        for r in rows:
            if r.result:
                r.result.d_ppl = (r.result.ppl - base) / base


def adaptive_pairs(rows: list[VariantRow]) -> list[AdaptivePair]:
    """Each measured adaptive variant with the measured standard variant of the same base type."""
    pairs = []
    for a in rows:
        if not a.adaptive or not a.result:
            continue
        std = next((s for s in rows if s.is_standard and s.type == a.type and s.result), None)
        if std is None:
            continue
        ra, rs = a.result, std.result
        d_size = (a.size or 0) - (std.size or 0)
        pairs.append(AdaptivePair(
            adaptive=a, standard=std,
            d_ppl=(ra.ppl - rs.ppl) / rs.ppl if rs.ppl else None,
            d_size=d_size, d_size_rel=d_size / std.size if std.size else None,
            has_speed=ra.tg is not None and rs.tg is not None))
    return pairs


def formats_present(rows: list[VariantRow]) -> list[FormatGroup]:
    """The distinct file types of the card's variants, in ladder order, with the variants of each."""
    out: dict[str, FormatGroup] = {}
    for r in rows:
        f = out.setdefault(r.type, FormatGroup(type=r.type, variants=[]))
        f.variants.append(r.name)
        f.has_adaptive = f.has_adaptive or r.adaptive
        if r.bpw is not None:
            f.bpw_min = r.bpw if f.bpw_min is None else min(f.bpw_min, r.bpw)
            f.bpw_max = r.bpw if f.bpw_max is None else max(f.bpw_max, r.bpw)
    return list(out.values())


def _picks(measured: list[VariantRow], ref: VariantRow | None) -> list[Pick]:
    """The smallest file within each of PICK_LIMITS of the reference's perplexity."""
    picks: list[Pick] = []
    if ref is None:
        return picks
    for limit in PICK_LIMITS:
        within = [r for r in measured if r is not ref and r.result.d_ppl is not None
                  and r.result.d_ppl <= limit and r.size and r.size < (ref.size or 0)]
        best = min(within, key=lambda r: r.size, default=None)
        if best is not None and best not in [p.row for p in picks]:
            picks.append(Pick(limit, best))
    return picks


def generation(data: CardInput, rows: list[VariantRow]) -> Generation:
    engines: list[Engine] = []
    for e in (r.engine for r in rows if r.engine):
        if not any((e.commit, e.llama_cpp_python) == (seen.commit, seen.llama_cpp_python) for seen in engines):
            engines.append(e)
    src = next((r.source for r in rows if r.source), None)
    used = next((r.imatrix_use for r in rows if r.imatrix_use), None)
    published = data.imatrix
    imatrix = None
    if used or published:
        imatrix = GenerationImatrix(dataset=(used.dataset if used else None) or (published.dataset if published else None),
                                    chunks=(used.chunks if used else None) or (published.chunks if published else None),
                                    ctx=published.ctx if published else None)
    return Generation(engines=engines, hubbot_version=__version__,
                      source_repo=(src.repo if src else None) or data.settings.upstream_repo,
                      source_revision=src.revision if src else None, source_origin=src.origin if src else None,
                      source_sha256=src.sha256 if src else None, imatrix=imatrix)


def _usage(repo: str, rows: list[VariantRow]) -> Usage:
    tagged = [r for r in rows if r.tag]
    example = next((r for r in tagged if r.type.startswith("Q4_K")), None) or next(
        (r for r in tagged if not r.is_float), None) or (tagged[0] if tagged else None)
    return Usage(repo=repo, example=example, tagged=tagged, untagged=[r for r in rows if not r.tag])


def chart_points(rows: list[VariantRow]) -> list[Point] | None:
    """The perplexity-vs-size chart's points; None when fewer than two files have both figures."""
    measured = [r for r in rows if r.result and r.result.ppl and r.size]
    if len(measured) < 2:
        return None
    return [Point(r.name, r.size / 1e9, r.result.ppl,
                  "float" if r.is_float else "adaptive" if r.adaptive else "auto" if r.auto else "standard")
            for r in measured]


def build_context(data: CardInput) -> CardContext:
    """The template context for ``data`` (its rows get their tags and reference deltas here)."""
    rows = data.rows
    _assign_tags(rows)
    ref = _reference_row(rows)
    _apply_reference(rows, ref)
    measured = [r for r in rows if r.result]
    planned = [r for r in rows if r.planned]
    quality = QualityTable(rows=[r for r in rows if r.result or r.planned], has_delta=ref is not None,
                           has_kld=any(r.result.kld_mean is not None for r in measured),
                           has_speed=any(r.result.tg is not None for r in measured),
                           has_planned=bool(planned)) if measured or planned else None
    adaptive_rows = [r for r in rows if r.adaptive]
    pairs = adaptive_pairs(rows)
    adaptive = AdaptiveSection(variants=adaptive_rows, pairs=pairs,
                               has_speed=bool(pairs) and all(p.has_speed for p in pairs)) if adaptive_rows else None
    s, upstream = data.settings, data.upstream
    base_url = HUB_URL.format(s.upstream_repo) if s.upstream_repo else None
    upstream_section = None
    if upstream is not None and upstream.body.strip():
        upstream_section = UpstreamSection(repo=s.upstream_repo, url=base_url, body=upstream.body.rstrip("\n"),
                                           start_marker=UPSTREAM_START, end_marker=UPSTREAM_END)
    return CardContext(
        # Both filled in by the renderer: the metadata, and the title (the template's default when unset).
        front_matter="", title=s.title or "", model_name=s.model_name, repo=s.repo,
        upstream_repo=s.upstream_repo, upstream_url=base_url, quantized_by=s.quantized_by,
        gated=bool(upstream and upstream.gated) or s.gated,
        license_link=upstream.meta.get("license_link") if upstream else None,
        gen=generation(data, rows), bench=data.bench if measured else None,
        rows=rows, quality=quality, adaptive=adaptive, auto=auto_section(rows),
        chart=Chart(CHART_NAME) if chart_points(rows) else None,
        formats=formats_present(rows), picks=_picks(measured, ref), imatrix_file=data.imatrix,
        usage=_usage(s.repo, rows), upstream=upstream_section, missing_variants=list(data.missing))
