"""``hubbot card``: render the model card from local data (no network), or preview it (``--preview``)."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import config_option, load, run_safely, threads_option


@click.command()
@config_option
@click.option("--dry-run", is_flag=True,
              help="Print the card (or write it to -o FILE) instead of writing README.md into the work directory.")
@click.option("--preview", is_flag=True,
              help="Like --dry-run, for a ladder not built here: files that are published and unchanged show the "
                   "target repo's figures, the others llama.cpp's plan (marked not yet measured); prints one line "
                   "saying what changed against the published card. Reads the target repo (no token needed for a "
                   "public one) and the source's header, never its weights.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --dry-run or --preview: write the card here (the chart SVG goes next to it) instead of stdout.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a standalone HTML preview (markdown rendered, chart inline).")
@click.option("--upstream", "upstream", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The upstream README to append (default: source.card, the source package's copy, or hubbot's cache).")
@threads_option
@run_safely
def card(config_path: Path, dry_run: bool, preview: bool, output: Path | None, html_path: Path | None,
         upstream: Path | None, threads: int | None) -> None:
    """Render the model card from the built files, benchmark results and the upstream card."""
    from hubbot.card.render import render_card, save_card
    from hubbot.card.upstream import load_upstream
    from hubbot.workdir import WorkDir, check_output_path, write_text_atomic

    if output is not None and not (dry_run or preview):
        raise click.UsageError("-o/--output goes with --dry-run or --preview; without them the card is written "
                               "into the work directory")
    for path, option in ((output, "-o/--output"), (html_path, "--html")):
        if path is not None:
            check_output_path(path, option)  # before any work, and before the other file is written
    cfg = load(config_path)
    note = None
    if preview:
        from hubbot.preview import preview_card

        result = preview_card(cfg, upstream=upstream, threads=threads)
        rendered, note = result.card, result.line()
        for extra in result.notes:
            click.echo(f"note: {extra}", err=True)
        click.echo(note, err=True)
    else:
        rendered = render_card(cfg, upstream=load_upstream(cfg, path=upstream))
    if dry_run or preview:
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

        write_text_atomic(html_path, card_html(rendered, cfg.model_name, note=note))
        click.echo(f"wrote {html_path}", err=True)
