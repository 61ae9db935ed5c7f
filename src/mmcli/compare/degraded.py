"""`compare --corrupt MODALITY:KIND@LEVEL` (repeatable): every run is also scored on its
test split with that modality degraded, as `mmcli evaluate --corrupt` does (the same
corruption seed for every run, so the runs stay paired by seed), and the report puts the
variants side by side under each degradation, each tested against the reference under the
same degradation. A run that does not read the modality is unaffected: its clean score is
its score. This shows where a modality pays: lips beside a voice in noise, say.

The scores are kept in each run's result file, so a comparison rerun into the same folder
computes only the degradations it has not scored yet.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcli import runs
from mmcli.compare import crossfit, ensemble, stats

if TYPE_CHECKING:
    from mmcli.compare.runner import Plan

LOG = logging.getLogger("mmcli")
KEY = "corrupted"


def check(specs: list[str], kinds: dict[str, str]) -> list[str]:
    """Each spec parsed against the data's modalities (exit 2 naming a bad one), written
    the one way the reports use."""
    from mmcli.evaluation.corrupt import parse

    return list(dict.fromkeys(str(parse(s, kinds)) for s in specs))


def scoring_config(plan: Plan, config):
    """The config a run's clean test scores and saved outputs are made with. With --corrupt,
    without the frozen-feature cache (its features are float16): `evaluate_run` scores the
    degraded inputs with the whole encoder, so clean and degraded then differ by the
    degradation alone, not by a row that float16 rounding moved."""
    if not plan.corruptions or not config.train.feature_cache:
        return config
    scoring = config.copy()
    scoring.train.feature_cache = False
    return scoring


def complete(out: Path, plan: Plan, cache_dir: str | None = None) -> None:
    """Score every finished run under each of the plan's corruptions it lacks."""
    from mmcli.compare.runner import RESULT, read_cell
    from mmcli.evaluation.api import evaluate_run

    for cell in plan.cells:
        saved = read_cell(out, cell)
        if saved is None or not plan.corruptions or crossfit.is_fold(cell):  # a fold run only weighs the ensemble
            continue
        have = saved.setdefault(KEY, {})
        reads = plan.variant(cell["variant"]).modalities
        todo = [spec for spec in plan.corruptions if spec not in have]
        if not todo:
            continue
        for spec in todo:
            if spec.split(":", 1)[0] not in reads:
                have[spec] = saved["scores"]  # the run never sees that modality
                continue
            LOG.info("%s seed %d: scoring the test split with %s", cell["variant"], cell["seed"], spec)
            kept: dict[str, Any] = {}
            scores = evaluate_run(out / cell["run"], cache_dir=cache_dir, save=False, corruptions=[spec], outputs=kept)
            if cell.get(ensemble.FLAG):  # an ensemble averages this run: its degraded outputs too
                ensemble.save_degraded(out / cell["run"], spec, kept["ids"], kept["outputs"])
            have[spec] = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        runs.write_json(out / cell["run"] / RESULT, saved)


def row_fields(plan: Plan, result: dict[str, Any]) -> dict[str, Any]:
    """results.csv: the metric of one run under each corruption."""
    return {f"corrupt {s}": (result.get(KEY) or {}).get(s, {}).get(plan.metric) for s in plan.corruptions}


def summary_fields(plan: Plan, results: list[dict[str, Any]], variant: str, reference: str | None) -> dict[str, Any]:
    """summary.csv: per corruption, the mean over seeds and the paired difference to the
    reference under the same corruption, with its interval and p-value."""
    out: dict[str, Any] = {}
    for s in plan.corruptions:
        key = f"corrupt {s}"
        mine = {r["seed"]: r[key] for r in results if r["variant"] == variant and r.get(key) is not None}
        out[key] = sum(mine.values()) / len(mine) if mine else None
        out[f"{key} delta"] = out[f"{key} p"] = out[f"{key} delta CI"] = None  # the reference: nothing to test
        if reference and reference != variant:
            theirs = {r["seed"]: r[key] for r in results if r["variant"] == reference and r.get(key) is not None}
            diff = stats.paired(mine, theirs)
            out[f"{key} delta"], out[f"{key} p"] = diff["delta"], diff["p_value"]
            out[f"{key} delta CI"] = None if diff["delta_ci_low"] is None else [diff["delta_ci_low"], diff["delta_ci_high"]]
    return out


def section(plan: Plan, summary: list[dict[str, Any]], reference: str | None) -> list[str]:
    if not plan.corruptions:
        return []

    def cell(r: dict[str, Any], s: str) -> str:
        value = r.get(f"corrupt {s}")
        if value is None:
            return "–"
        text = f"{value:.4f}"
        if r.get(f"corrupt {s} delta") is not None:
            p = r.get(f"corrupt {s} p")
            text += f" ({r[f'corrupt {s} delta']:+.4f}" + ("" if p is None else f", p {p:.3f}") + ")"
        return text

    lines = ["", "## Degraded inputs", "",
             f"{plan.metric} on the test split with one modality degraded (`--corrupt`, as `mmcli evaluate --corrupt`; "
             f"the same corruption seed for every run); in brackets the difference to `{reference}` under the same "
             "degradation, paired by seed, and its p-value. A variant that does not read the modality keeps its clean "
             "score.", "",
             "| variant | clean | " + " | ".join(plan.corruptions) + " |", "|---|---|" + "---|" * len(plan.corruptions)]
    for r in summary:
        clean = "–" if r.get("mean") is None else f"{r['mean']:.4f}"
        lines.append(f"| {r['variant']} | {clean} | " + " | ".join(cell(r, s) for s in plan.corruptions) + " |")
    return lines
