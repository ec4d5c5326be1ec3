"""``hubbot bench``: measure the built variants (perplexity, KLD, speed, size)."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import config_option, echo_json, json_option, load, only_option, run_safely, threads_option
from hubbot.workdir import human_bytes


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def render_table(results: list[dict]) -> str:
    """A plain-text table of the results, one line per variant."""
    head = f"{'variant':<18} {'size':>10} {'bpw':>6} {'PPL':>16} {'KLD':>9} {'KLD p99':>9} {'same top':>8} {'pp t/s':>8} {'tg t/s':>7}  status"
    lines = [head]
    for r in results:
        ppl, kld, spd = r.get("perplexity") or {}, r.get("kld") or {}, r.get("speed") or {}
        ppl_s = f"{ppl['ppl']:.4f} ±{ppl['stderr']:.3f}" if ppl else "-"
        same = f"{100 * kld['same_top']:.2f}%" if kld else "-"
        lines.append(
            f"{r['variant']:<18} {human_bytes(r['size']):>10} {_fmt(r.get('bpw'), '.2f'):>6} {ppl_s:>16} "
            f"{_fmt(kld.get('mean'), '.5f'):>9} {_fmt(kld.get('p99'), '.4f'):>9} {same:>8} "
            f"{_fmt(spd.get('pp'), '.1f'):>8} {_fmt(spd.get('tg'), '.1f'):>7}  {r.get('status', '')}"
        )
    return "\n".join(lines)


@click.command()
@config_option
@only_option
@click.option("--chunks", type=click.IntRange(min=2), default=None,
              help="Evaluate at most N chunks of benchmark.ctx tokens (default: benchmark.chunks, else the whole text).")
@threads_option
@click.option("--no-speed", is_flag=True, help="Skip the pp512/tg128 speed measurement.")
@click.option("--force", is_flag=True, help="Measure again even when stored results are up to date.")
@json_option
@run_safely
def bench(config_path: Path, only: tuple[str, ...], chunks: int | None, threads: int | None,
          no_speed: bool, force: bool, as_json: bool) -> None:
    """Measure built variants: perplexity, KL divergence against the reference, speed and size."""
    from hubbot.bench.run import run_bench

    results = run_bench(load(config_path), only=only or None, chunks=chunks, threads=threads, force=force,
                        speed=False if no_speed else None)
    if as_json:
        echo_json(results)
    else:
        click.echo(render_table(results))
