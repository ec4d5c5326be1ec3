"""``hubbot card``: render the model card from local data (no network)."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import config_option, load, run_safely


@click.command()
@config_option
@click.option("--dry-run", is_flag=True,
              help="Print the card (or write it to -o FILE) instead of writing README.md into the work directory.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --dry-run: write the card here (the chart SVG goes next to it) instead of stdout.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a standalone HTML preview (markdown rendered, chart inline).")
@click.option("--upstream", "upstream", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The upstream README to append (default: source.card, the source package's copy, or hubbot's cache).")
@run_safely
def card(config_path: Path, dry_run: bool, output: Path | None, html_path: Path | None, upstream: Path | None) -> None:
    """Render the model card from the built files, benchmark results and the upstream card."""
    from hubbot.card.render import render_card, save_card
    from hubbot.card.upstream import load_upstream
    from hubbot.workdir import WorkDir, write_text_atomic

    cfg = load(config_path)
    if output is not None and not dry_run:
        raise click.UsageError("-o/--output goes with --dry-run; without it the card is written into the work directory")
    rendered = render_card(cfg, upstream=load_upstream(cfg, path=upstream))
    if dry_run:
        if output is None:
            click.echo(rendered.text, nl=False)
        else:
            if rendered.chart_svg is not None:
                # Next to the card, so its relative image link works when the file is opened.
                write_text_atomic(output.parent / rendered.chart_name, rendered.chart_svg)
            write_text_atomic(output, rendered.text)
            click.echo(f"wrote {output}", err=True)
    else:
        for path in save_card(rendered, WorkDir(cfg.workdir).out):
            click.echo(f"wrote {path}", err=True)
    if html_path is not None:
        from hubbot.card.html import card_html

        write_text_atomic(html_path, card_html(rendered, cfg.model_name))
        click.echo(f"wrote {html_path}", err=True)
