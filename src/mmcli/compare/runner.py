"""Run a comparison: every variant on the same splits, budget and seeds; then summarise.

The data is preprocessed once and split once (with the base seed); seed i of every
variant uses the training seed base + i, so results pair up by seed across variants.
A finished run (its `eval-test.json` exists) is not run again when the comparison is
restarted in the same folder.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmcli import runs
from mmcli.compare import stats
from mmcli.compare.variants import Variant, expand
from mmcli.config import Config
from mmcli.errors import UsageError
from mmcli.fusion import DEFAULT_FUSIONS, FUSIONS
from mmcli.heads import TASKS
from mmcli.pipeline import prepare_training

MARKER = "compare.json"


@dataclass
class CompareResult:
    out: Path
    metric: str
    results: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)


def prepare_out(out: Path, overwrite: bool) -> None:
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UsageError(f"{out}: folder exists, is not empty and holds no comparison; choose another --out")
        if overwrite:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def plan(config: Config, items: list[str], cache_dir: str | None, workers: int = 1, progress=None):
    """Prepare the data once and expand the variants."""
    base = config.copy()
    base.data.split_seed = config.train.seed if config.data.split_seed is None else config.data.split_seed
    base.model.modalities = None
    data = prepare_training(base, cache_dir, workers, progress)
    if "test" not in data.splits:
        raise UsageError(f"{data.table.source}: no test rows to compare on; add rows with split=test, "
                         "or drop the split column to draw a split")
    variants = expand(items, data.modalities, FUSIONS.names(), DEFAULT_FUSIONS)
    return base, data, variants


def variant_config(base: Config, variant: Variant, seed_index: int) -> Config:
    cfg = base.copy()
    cfg.model.modalities = list(variant.modalities)
    if variant.fusion:
        cfg.model.fusion = variant.fusion
    cfg.train.seed = base.train.seed + seed_index
    return cfg


def run_dir_for(out: Path, variant: Variant, seed: int) -> Path:
    return out / "runs" / f"{variant.name.replace(':', '-')}-seed{seed}"


def run_one(base: Config, data, variant: Variant, seed_index: int, out: Path, metric: str,
            fit_progress=None) -> dict[str, Any]:
    from mmcli.training.api import fingerprint, train

    cfg = variant_config(base, variant, seed_index)
    folder = run_dir_for(out, variant, cfg.train.seed)
    done = _finished(folder, fingerprint(cfg, data.table.key))
    if done is not None:
        scores, seconds, reused = done[0], done[1], True
    else:
        outcome = train(cfg, folder, overwrite=True, data=data, progress=fit_progress)
        scores, seconds, reused = outcome.test_scores or {}, round(outcome.result.seconds, 2), False
    if metric not in scores:
        raise UsageError(f"metric '{metric}' is not measured by this task (it measures: {', '.join(k for k, v in scores.items() if isinstance(v, float))})")
    return {"variant": variant.name, "family": variant.family, "seed": cfg.train.seed, "metric": metric,
            "value": scores[metric], "best_epoch": scores.get("best_epoch"), "seconds": seconds,
            "run": str(folder.relative_to(out)), "reused": reused}


def _finished(folder: Path, expected: str) -> tuple[dict, float | None] | None:
    """The scores of a finished run made with the same config and data, else None."""
    try:
        prov = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
        scores = json.loads((folder / "eval-test.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (scores, prov.get("seconds")) if prov.get("fingerprint") == expected else None


def summarise(results: list[dict[str, Any]], variants: list[Variant], metric: str, higher_is_better: bool) -> list[dict[str, Any]]:
    by_variant = {v.name: {r["seed"]: r["value"] for r in results if r["variant"] == v.name} for v in variants}
    rows = []
    for v in variants:
        row = {"variant": v.name, "family": v.family, "metric": metric, **stats.describe(list(by_variant[v.name].values()))}
        rows.append(row)
    uni = [r for r in rows if r["family"] == "unimodal"]
    best = (max if higher_is_better else min)(uni, key=lambda r: r["mean"]) if uni else None
    for row in rows:
        row["is_best_unimodal"] = best is not None and row["variant"] == best["variant"]
        if best is None:
            row.update({"delta_vs_best_unimodal": None, "p_value": None})
        else:
            diff = stats.paired(by_variant[row["variant"]], by_variant[best["variant"]])
            row["delta_vs_best_unimodal"] = diff.pop("delta")
            row.update(diff)
        row["best_unimodal"] = best["variant"] if best else None
        row["verdict"] = stats.verdict(row, higher_is_better)
    return rows


def write_outputs(result: CompareResult) -> None:
    out = result.out
    runs.write_atomic(out / "results.csv", _csv(result.results))
    runs.write_atomic(out / "summary.csv", _csv(result.summary))
    runs.write_json(out / "summary.json", result.summary)
    runs.write_atomic(out / "report.md", report_markdown(result))


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def report_markdown(result: CompareResult) -> str:
    lines = [f"# Comparison on {result.metric}", "",
             "Mean over seeds with a 95 % t-interval; delta is the difference to the best unimodal "
             "variant, paired by seed, with the p-value of a two-sided paired t-test.", "",
             "| variant | n | mean | std | 95 % CI | delta vs best unimodal | p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result.summary:
        ci = "–" if r["ci95_low"] is None else f"[{r['ci95_low']:.4f}, {r['ci95_high']:.4f}]"
        lines.append(f"| {r['variant']} | {r['n']} | {_fmt(r['mean'])} | {_fmt(r['std'])} | {ci} | "
                     f"{_fmt(r['delta_vs_best_unimodal'])} | {_fmt(r['p_value'])} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def run_compare(config: Config, items: list[str], seeds: int, out: Path, metric: str | None = None,
                cache_dir: str | None = None, overwrite: bool = False, workers: int = 1,
                on_run: Callable[[int, int, str], Any] | None = None, fit_progress=None,
                preprocess_progress=None) -> CompareResult:
    if seeds < 1:
        raise UsageError("--seeds must be at least 1")
    task = TASKS.get(config.model.task)()
    metric = metric or config.eval.metric or task.default_metric
    if metric not in task.metrics:
        raise UsageError(f"--metric {metric}: not a metric of {task.name} (choose from {', '.join(task.metrics)})")
    base, data, variants = plan(config, items, cache_dir, workers, preprocess_progress)
    prepare_out(out, overwrite)
    runs.write_json(out / MARKER, {"variants": [v.name for v in variants], "seeds": seeds, "metric": metric,
                                   "config": base.to_dict()})
    result = CompareResult(out, metric)
    total = len(variants) * seeds
    for v in variants:
        for i in range(seeds):
            if on_run:
                on_run(len(result.results), total, f"{v.name} seed {base.train.seed + i}")
            result.results.append(run_one(base, data, v, i, out, metric, fit_progress))
            write_outputs_partial(result)
    if on_run:
        on_run(total, total, "done")
    result.summary = summarise(result.results, variants, metric, metric not in task.lower_is_better)
    write_outputs(result)
    return result


def write_outputs_partial(result: CompareResult) -> None:
    runs.write_atomic(result.out / "results.csv", _csv(result.results))
