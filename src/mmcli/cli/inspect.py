"""`mmcli inspect`: one screen about a run folder."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typing_extensions import Annotated

from mmcli.cli.common import handles_errors


@handles_errors
def inspect(run: Annotated[Path, typer.Argument(help="Run folder written by mmcli train.")]) -> None:
    """Summarise a run: variant, data, model, best epoch, metrics and size on disk."""
    from mmcli import runfiles, runs
    from mmcli.reporting.tables import show_table

    runs.check_run_dir(run)
    cfg = runfiles.read_config(run)
    runfiles.read_data(run, cfg)  # checked: a damaged data.json is named, not a crash below
    data = runs.read_json(run / "data.json", dict)
    prov = runs.read_json(run / "provenance.json", dict) if (run / "provenance.json").exists() else {}
    history = runs.read_metrics(run)
    evals = {p.stem: runs.read_json(p, dict) for p in sorted(run.glob("eval-*.json"))}
    size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    rows = [
        ("variant", prov.get("variant", "?")),
        ("data", f"{data.get('source')} (cache {data.get('data_key')})"),
        ("modalities", ", ".join(f"{n} ({m['kind']})" for n, m in data["modalities"].items())),
        ("splits", ", ".join(f"{k} {v}" for k, v in data.get("splits", {}).items())),
        ("fusion / task", f"{_fusion(cfg, len(data['modalities']))} / {cfg.model.task}"),
        ("parameters", prov.get("parameters", "?")),
        ("epochs run", f"{len(history)} of {cfg.train.epochs}{_cycles(cfg.train.max_cycles)}; best {prov.get('best_epoch', '?')}"),
    ]
    if history:
        last = history[-1]
        rows.append(("last epoch", ", ".join(f"{k} {v:.4f}" for k, v in last.items() if isinstance(v, float))))
    for name, scores in evals.items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
        rows.append((name, f"{shown}, n {scores.get('n_examples')}"))
    rows += [("size on disk", f"{size / 1e6:.1f} MB"), ("trained with", prov.get("command", "?")),
             ("versions", f"mmcli {prov.get('mmcli')}, torch {prov.get('torch')}, python {prov.get('python')}")]
    show_table(str(run), ["", ""], rows, "table" if sys.stdout.isatty() else "csv")


def _cycles(cycles: int | None) -> str:
    return f" a cycle, up to {cycles} cycles" if (cycles or 1) > 1 else ""


def _fusion(cfg, n_modalities: int) -> str:
    from mmcli.heads import make_task

    if make_task(cfg).crossmodal or cfg.model.crossmodal == "translate":
        return "none (the task's head reads each encoder)"
    return cfg.model.fusion if n_modalities > 1 else "identity"
