"""`mmcli compare`: the ablation of unimodal and multimodal variants, with statistics."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from mmcli.cli.common import CacheDirOpt, ConfigOpt, QuietOpt, SetOpt, WorkersOpt, cache_arg, handles_errors, resolve_config, set_quiet


@handles_errors
def compare(
    items: Annotated[Optional[list[str]], typer.Argument(help="Families (unimodal, multimodal) or variants (unimodal:image, multimodal:concat); default: unimodal multimodal.", show_default=False)] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Manifest or folder; default: the built-in toy set.", show_default=False)] = None,
    config: ConfigOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per variant; results pair up by seed.")] = 1,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Most epochs per run.", show_default=False)] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="Metric of the summary and the statistics (default: accuracy).", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Base seed: the split's seed, and seed i trains with base + i.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for runs and results (default: runs/compare-<timestamp>). Rerunning into the same folder reuses finished runs.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in an existing comparison folder.")] = False,
    sets: SetOpt = None,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """Train every variant with the same splits, budget and seeds; print mean, std and delta to the best unimodal."""
    from mmcli.compare.runner import run_compare
    from mmcli.reporting.console import FitBar, log, task_bar

    set_quiet(quiet)
    cfg = resolve_config(config, {"data.manifest": data, "train.epochs": epochs, "train.seed": seed}, sets)
    out = out or Path("runs") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def on_run(done: int, total: int, name: str) -> None:
        if done < total:
            log(f"[{done + 1}/{total}] {name}")

    with task_bar("preprocessing") as update, FitBar(metric=metric or cfg.eval.metric) as bar:
        result = run_compare(cfg, items or [], seeds, out, metric, cache_arg(cache_dir), overwrite, workers,
                             on_run, bar, update)
    log(f"results in {out} (results.csv, summary.csv, summary.json, report.md)")
    _show(result)


def _show(result) -> None:
    from mmcli.reporting.tables import show_table

    def f(v, pct=True):
        if v is None:
            return "–"
        return f"{100 * v:+.1f}" if pct == "delta" else f"{100 * v:.1f}" if pct else f"{v:.3f}"

    rate = result.metric in ("accuracy", "macro_f1")
    rows = []
    for r in result.summary:
        pm = "" if r["std"] is None else f" ± {f(r['std'], rate)}"
        rows.append((r["variant"], r["n"], f"{f(r['mean'], rate)}{pm}", f(r["delta_vs_best_unimodal"], "delta" if rate else False),
                     "–" if r["p_value"] is None else f"{r['p_value']:.3g}", r["verdict"]))
    unit = f"{result.metric} (%)" if rate else result.metric
    fmt = "table" if sys.stdout.isatty() else "csv"
    show_table(f"compare: {unit}, mean ± std over seeds", ["variant", "n", unit, "delta vs best unimodal", "p", "verdict"], rows, fmt)
