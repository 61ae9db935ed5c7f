"""The robustness sweep: every corruption of every modality at levels 0.0, 0.1, ..., 1.0,
and every modality dropped, with MultiBench's scores (Liang et al., 2021):

- relative robustness: the area under the accuracy-vs-level curve (trapezoids, step 0.1),
  so a model that keeps its accuracy scores its clean accuracy, one that drops scores less;
- effective robustness: sum over levels of (accuracy - reference), where the reference
  curve is shifted to start at the same clean accuracy. MultiBench takes late fusion as the
  reference; for one run mmcli takes the flat line at the clean accuracy, so the score is
  the summed accuracy lost (0 for a model that loses nothing, negative otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mmcli import runs
from mmcli.errors import UsageError
from mmcli.data.dataset import encode_table
from mmcli.evaluation.corrupt import KINDS, Corruption, perturb
from mmcli.pipeline import data_for_run, load_run
from mmcli.training.loop import predict_logits
from mmcli.training.setup import pick_device

LEVELS = [round(i / 10, 1) for i in range(11)]


def relative_robustness(curve: list[float]) -> float:
    return sum((a + b) * 0.1 / 2 for a, b in zip(curve, curve[1:]))


def effective_robustness(curve: list[float]) -> float:
    return sum(a - curve[0] for a in curve)


def sweep(run_dir: Path, data: str | None = None, split: str | None = None, cache_dir: str | None = None,
          device: str = "auto", seed: int = 0, metric: str | None = None,
          on_step: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    run = load_run(run_dir)
    chosen = data_for_run(run, data, split, cache_dir)
    table, split = chosen.table, chosen.split
    task = run.task
    asked = metric
    metric = metric or run.config.eval.metric or task.default_metric
    if asked is None and metric in task.lower_is_better and task.robustness_metric is not None:
        metric = task.robustness_metric  # verification: ROC AUC in place of the EER
    if metric in task.lower_is_better:
        raise UsageError(f"--robustness scores curves of a metric where higher is better; this run's metric "
                         f"'{metric}' is lower-is-better (use --drop and --corrupt for single evaluations)")
    target = pick_device(device)
    run.model.to(target)

    def index(values: list[str]):
        return task.encode(values, run.labels)

    sources = chosen.encoded.sources  # which rows share a source, read before any corruption

    def score(drops: list[str], corruptions: list[Corruption]) -> float:
        encoded = encode_table(perturb(table, drops, corruptions, seed), list(run.specs), run.tokenizers, index,
                               sources=sources)
        logits = predict_logits(run.model, encoded, run.config, target)
        return task.score(logits, encoded, run.labels)[metric]

    plan = [(m, kind) for m, spec in run.specs.items() for kind in KINDS[spec.kind]]
    total, done = len(plan) * len(LEVELS) + len(run.specs), 0
    clean = score([], [])
    curves: dict[str, dict[str, list[float]]] = {}
    for m, kind in plan:
        curve = []
        for level in LEVELS:
            curve.append(clean if level == 0 else score([], [Corruption(m, kind, level)]))
            done += 1
            if on_step:
                on_step(done, total)
        curves.setdefault(m, {})[kind] = curve
    dropped = {}
    for m in run.specs:
        if len(run.specs) > 1:
            dropped[m] = score([m], [])
        done += 1
        if on_step:
            on_step(done, total)
    result = {
        "metric": metric, "split": split, "levels": LEVELS, "clean": clean, "seed": seed,
        "curves": curves, "dropped": dropped, "warnings": chosen.warnings,
        "relative_robustness": {m: {k: relative_robustness(c) for k, c in ks.items()} for m, ks in curves.items()},
        "effective_robustness": {m: {k: effective_robustness(c) for k, c in ks.items()} for m, ks in curves.items()},
    }
    runs.write_json(run_dir / "robustness.json", result)
    result["plots"] = plot_curves(result, run_dir)
    return result


def plot_curves(result: dict[str, Any], run_dir: Path) -> list[str]:
    """One PNG per modality: the metric against the corruption level, a line per kind."""
    from mmcli.reporting.plots import figure, save_png

    names = []
    for m, kinds in result["curves"].items():
        fig, ax = figure(5, 3.5)
        for kind, curve in kinds.items():
            ax.plot(result["levels"], curve, marker="o", markersize=3, label=kind)
        if m in result["dropped"]:
            ax.axhline(result["dropped"][m], color="grey", linestyle="--", label=f"{m} missing")
        ax.set_xlabel("corruption level")
        ax.set_ylabel(result["metric"])
        if result["metric"] != "r2":  # rates live in [0, 1]; R^2 can be negative
            ax.set_ylim(0, 1)
        ax.set_title(f"robustness: {m}")
        ax.legend(fontsize=8)
        name = f"robustness-{m}.png"
        save_png(fig, run_dir / name)
        names.append(name)
    return names
