"""``hubbot bench``: measure the built variants (perplexity, KLD, speed, size)."""

from __future__ import annotations

from pathlib import Path

import click

from hubbot.cli.options import (
    config_option,
    echo_json,
    gpu_layers_option,
    json_option,
    load,
    only_option,
    run_safely,
    threads_option,
    with_gpu_layers,
)
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
@gpu_layers_option
@click.option("--reference-only", is_flag=True,
              help="Only compute and store the reference distributions KLD is measured against (a release's "
                   "imatrix job; the folder is printed).")
@click.option("--require-reference", is_flag=True,
              help="Fail instead of computing the reference distributions when they are not stored (a release's "
                   "build job, which receives them as an artifact).")
@json_option
@run_safely
def bench(config_path: Path, only: tuple[str, ...], chunks: int | None, threads: int | None,
          no_speed: bool, force: bool, gpu_layers: int | None, reference_only: bool, require_reference: bool,
          as_json: bool) -> None:
    """Measure built variants: perplexity, KL divergence against the reference, speed and size."""
    from hubbot.bench.run import compute_reference, run_bench

    cfg = with_gpu_layers(load(config_path), "benchmark", gpu_layers)
    if reference_only:
        if only or require_reference:
            raise click.UsageError("--reference-only measures no variant: drop --only and --require-reference")
        ref = compute_reference(cfg, chunks=chunks, threads=threads)
        if as_json:
            echo_json(ref)
        else:
            click.echo(f"reference distributions of {ref['file']}: {human_bytes(ref['size'])} in {ref['folder']}")
        return
    results = run_bench(cfg, only=only or None, chunks=chunks, threads=threads, force=force,
                        speed=False if no_speed else None, require_reference=require_reference)
    if as_json:
        echo_json(results)
    else:
        click.echo(render_table(results))
