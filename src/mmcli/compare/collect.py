"""Collect a comparison's cell results into its reports.

Everything here reads only the plan (`compare.json`) and the files of the cells' run
folders (`compare-result.json`; `compare-outputs.npz` and `target.json`, which the ensemble
and the resampled test read), so a plain run, `--jobs N` and `--collect DIR` after
`--print-jobs` all end in the same summary. Outputs, all directly in the comparison folder: `results.csv` (a row per
cell), `summary.csv` and `summary.json` (a row per variant), `attribution.json` (when the
`subsets` family is complete), `per_class.csv`, `report.md` and `compare.png` (those two written by `mmcli.compare.report`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcli import ledger, runs
from mmcli.compare import attribution as attr
from mmcli.compare import crossfit, degraded
from mmcli.compare import ensemble, report, resample, stats
from mmcli.compare.runner import Plan, load_plan, read_cell
from mmcli.compare.variants import Variant, subset_variant
from mmcli.errors import UsageError

LOG = logging.getLogger("mmcli")


@dataclass
class CompareResult:
    out: Path
    metric: str
    results: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    attribution: dict[str, Any] | None = None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # cells without a result
    modalities: list[str] = field(default_factory=list)
    command: str = ""
    reference: str | None = None  # the variant chosen with --reference (None: the best unimodal one)
    unlearnt: str | None = None  # said when no variant beats the label prior (`learnt_nothing`)


def collect(out: Path, plan: Plan | None = None, reused: set[int] | None = None,
            reference: str | None = None) -> CompareResult:
    """`reference` (--reference on --collect) replaces the plan's for these reports."""
    plan = plan or load_plan(out)
    reference = reference or plan.reference
    check_reference(reference, plan.variants)
    result = CompareResult(out, plan.metric, modalities=list(plan.modalities), command=plan.command, reference=reference)
    saved: dict[int, dict[str, Any]] = {}
    for k, cell in enumerate(plan.cells):
        found = read_cell(out, cell)
        if found is None:
            result.missing.append(f"job {k}: {crossfit.label(cell)}")
        else:
            saved[k] = found
    pairs = [(plan.cells[k], r, None if reused is None else k in reused) for k, r in saved.items()
             if not crossfit.is_fold(plan.cells[k])]  # a fold run only weighs the ensemble
    pairs += [(cell, r, None) for cell, r in ensemble.results(out, plan, saved)]  # computed, never run
    result.results = [_row(plan, cell, r, again) for cell, r, again in pairs]
    result.summary = summarise(result.results, plan, reference, resample.gather(out, plan, [(c, r) for c, r, _ in pairs]))
    result.unlearnt = learnt_nothing(result.summary, plan)
    if result.unlearnt:
        LOG.warning("%s: %s", out, result.unlearnt)
    result.attribution = attribution(result.results, plan)
    result.per_class = per_class(plan, [(cell["variant"], r) for cell, r, _ in pairs], result.summary)
    write_outputs(result, plan)
    return result


def check_reference(reference: str | None, variants: list[Variant]) -> None:
    names = [v.name for v in variants]
    if reference is not None and reference not in names:
        raise UsageError(f"--reference {reference}: not a variant of this comparison (its variants: {', '.join(names)})")


def _row(plan: Plan, cell: dict[str, Any], r: dict[str, Any], reused: bool | None) -> dict[str, Any]:
    """The results.csv row of one run (or of one seed of the ensemble: no run folder)."""
    row = {"variant": cell["variant"], "family": r["family"], "seed": cell["seed"], "metric": plan.metric,
           "value": r["scores"].get(plan.metric)}
    for m in plan.modalities:
        row[f"without_{m}"] = r["without"].get(m, {}).get(plan.metric)
    row["others_missing"] = r.get("others_missing", {}).get(plan.metric)
    row.update(degraded.row_fields(plan, r))
    row.update({"best_epoch": r.get("best_epoch"), "seconds": r.get("seconds"), "run": cell["run"], "reused": reused})
    row["weights"] = r.get("weights")  # the ensemble's, chosen on the validation split (None: equal, or a run)
    row[ensemble.WEIGHED_ON] = r.get(ensemble.WEIGHED_ON)  # ... or on out-of-fold outputs (mmcli.compare.crossfit)
    return row


def _values(results: list[dict[str, Any]], variant: str, key: str = "value") -> dict[int, float]:
    return {r["seed"]: r[key] for r in results if r["variant"] == variant and r[key] is not None}


def summarise(results: list[dict[str, Any]], plan: Plan, reference: str | None = None,
              rows_of: tuple[dict, Any] | None = None) -> list[dict[str, Any]]:
    """A row per variant: its statistics and its paired difference to the reference (the
    variant chosen with --reference, or else the best unimodal one), over the seeds and,
    where `rows_of` (`resample.gather`) has the test rows, over the seeds and the test split."""
    rows = []
    for v in plan.variants:
        row = {"variant": v.name, "family": v.family, "metric": plan.metric, **stats.describe(list(_values(results, v.name).values()))}
        rows.append(row)
    uni = [r for r in rows if r["family"] == "unimodal" and r["mean"] is not None]
    best = (max if plan.higher_is_better else min)(uni, key=lambda r: r["mean"]) if uni else None
    ref = reference or (best["variant"] if best else None)
    for row in rows:
        row["is_best_unimodal"] = best is not None and row["variant"] == best["variant"]
        row["best_unimodal"] = best["variant"] if best else None
        row["delta_vs_best_unimodal"] = _difference(results, row, best["variant"] if best else None)["delta"]
        row["reference"] = ref
        row["is_reference"] = row["variant"] == ref
        diff = _difference(results, row, ref)
        row["delta_vs_reference"] = diff.pop("delta")
        row.update(diff)
        row["test"] = stats.TEST_NAME
        row["p_holm"] = row["holm_tests"] = row["verdict"] = None  # after the tests of every row, in this place
        for key in [f"without_{m}" for m in plan.modalities] + ["others_missing"]:
            # robustness: the metric with a modality missing at test time (translation: all but the source)
            values = list(_values(results, row["variant"], key).values())
            row[key] = sum(values) / len(values) if values else None
        row.update(degraded.summary_fields(plan, results, row["variant"], ref))
        if plan.tune is not None:  # --tune: the values the search chose for it (none for the ensemble, which trains nothing)
            row["tuned"] = plan.tuned_values(row["variant"])
            row["tuned_validation"] = (plan.tuned.get(row["variant"]) or {}).get("score")
    resample.add(rows, *(rows_of or ({}, None)))
    tests = sum(r["p_value"] is not None for r in rows)
    for row, adjusted, again in zip(rows, stats.holm([r["p_value"] for r in rows]), stats.holm([r["p_resampled"] for r in rows])):
        row["p_holm"], row["holm_tests"], row["p_resampled_holm"] = adjusted, tests, again
        row["verdict"] = stats.verdict(row, plan.higher_is_better, chosen=reference is not None)
        row.update(_versus_prior(results, row, plan))
    return rows


def _versus_prior(results: list[dict[str, Any]], row: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The variant against the label prior's score on the test split (what a model that sees
    no input scores, `plan.baseline`): `p_vs_prior`, a two-sided one-sample t-test over the
    seeds, and `above_prior`, better than it on every seed. Not the t-test: with 2 seeds it
    has one degree of freedom, and the toy's fused models at 49 % against a prior of 8 %
    were not significantly above it on one machine's floating-point sums."""
    prior = (plan.baseline or {}).get(plan.metric)
    values = list(_values(results, row["variant"]).values())
    if prior is None or not values:
        return {"prior": prior, "p_vs_prior": None, "above_prior": None}
    better = all(v > prior if plan.higher_is_better else v < prior for v in values)
    return {"prior": prior, "p_vs_prior": stats.paired_t_test([v - prior for v in values]), "above_prior": better}


def learnt_nothing(summary: list[dict[str, Any]], plan: Plan) -> str | None:
    """A warning when no variant is better than the label prior on every seed: then no model
    learnt from this data what holds on its test split, and the verdicts compare models
    that have not learnt. On spoken COCO-mini (80 training photos) every variant, fused or
    not, stayed below the share of the most frequent class on some seed (their means all
    below it). A variant alone above it (a fusion of modalities that are each useless
    alone) is enough to say nothing. Not on the loss: a model that learnt but is over-confident
    where it errs can have a higher loss than the prior's."""
    if plan.metric == "loss":
        return None
    scored = [r for r in summary if r.get("above_prior") is not None]
    if not scored or any(r["above_prior"] for r in scored):
        return None
    return (f"no variant is {'above' if plan.higher_is_better else 'below'} the label prior's "
            f"{plan.metric} of {scored[0]['prior']:.4g} on every seed (a model that sees no input and predicts from the training "
            "split's labels alone): no model learnt from this data what holds on its test split, so the differences "
            "between the variants say nothing about fusion. More training examples or a pretrained encoder "
            "(docs/encoders.md) come first")


def _difference(results: list[dict[str, Any]], row: dict[str, Any], ref: str | None) -> dict[str, Any]:
    if ref is None or row["variant"] == ref:  # no reference, or the reference itself: nothing to test
        return {"delta": 0.0 if ref else None, "delta_ci_low": None, "delta_ci_high": None, "p_value": None,
                "n_paired": row["n"] if ref else 0}
    return stats.paired(_values(results, row["variant"]), _values(results, ref))


def attribution(results: list[dict[str, Any]], plan: Plan) -> dict[str, Any] | None:
    """Shapley values and pairwise interactions of the modalities, when every subset ran."""
    players = list(plan.modalities)
    if len(players) < 2 or plan.baseline is None or plan.metric not in plan.baseline:
        return None
    fusion = plan.base_config().model.fusion
    names = {frozenset(s): subset_variant(tuple(s), players, fusion).name for s in attr.all_subsets(players) if s}
    planned = {v.name for v in plan.variants}
    if not set(names.values()) <= planned:
        return None
    per_seed = {name: _values(results, name) for name in names.values()}
    seeds = sorted(set.intersection(*(set(v) for v in per_seed.values())))
    if not seeds:
        return None
    empty = plan.baseline[plan.metric]
    phis, inters = [], []
    for s in seeds:
        def v(subset: frozenset, s: int = s) -> float:
            return empty if not subset else per_seed[names[subset]][s]
        phis.append(attr.shapley(players, v))
        inters.append(attr.interactions(players, v))
    mean_value = {"+".join(m for m in players if m in subset): sum(per_seed[name][s] for s in seeds) / len(seeds)
                  for subset, name in names.items()}
    return {
        "metric": plan.metric,
        "method": "Exact Shapley value (Shapley, 1953) over every subset of the modalities, and the pairwise "
                  "Shapley interaction index (Grabisch & Roubens, 1999); the empty set is the training label prior",
        "fusion": fusion,
        "seeds": seeds,
        "empty_set": empty,
        "value_of_subsets": mean_value,
        "shapley": {m: stats.describe([p[m] for p in phis]) for m in players},
        "interaction": {attr.pair_name(pair): stats.describe([i[pair] for i in inters]) for pair in inters[0]},
    }


def per_class(plan: Plan, saved: list[tuple[str, dict[str, Any]]], summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean per-class F1 of each variant over seeds (from its (variant, result) pairs), and
    its difference to the best unimodal."""
    f1: dict[str, dict[str, list[float]]] = {}
    for variant, r in saved:
        for label, scores in (r.get("per_class") or {}).items():
            f1.setdefault(variant, {}).setdefault(label, []).append(scores["f1"])
    if not f1:
        return []
    best = next((s["best_unimodal"] for s in summary if s["best_unimodal"]), None)
    rows = []
    for v in plan.variants:
        for label, values in f1.get(v.name, {}).items():
            mean = sum(values) / len(values)
            ref = f1.get(best, {}).get(label) if best else None
            rows.append({"variant": v.name, "class": label, "f1": mean, "n": len(values),
                         "delta_vs_best_unimodal": mean - sum(ref) / len(ref) if ref else None})
    return rows


# --------------------------------------------------------------------------- files

OUTPUTS = ("results.csv", "summary.csv", "summary.json", "report.md", "attribution.json", "per_class.csv", "compare.png")


def write_outputs(result: CompareResult, plan: Plan) -> None:
    out = result.out
    for name in OUTPUTS:  # all or none: a user's file among them stops the writing before the first
        ledger.check_replace(out / name)
    runs.write_atomic(out / "results.csv", to_csv(result.results))
    runs.write_atomic(out / "summary.csv", to_csv(result.summary))
    runs.write_json(out / "summary.json", result.summary)
    runs.write_atomic(out / "report.md", report.markdown(result, plan))
    optional = {"attribution.json": result.attribution is not None, "per_class.csv": bool(result.per_class),
                "compare.png": any(r["mean"] is not None for r in result.summary)}
    for name, wanted in optional.items():
        if not wanted and not ledger.discard(out / name):  # one of an earlier plan would contradict the report
            LOG.warning("%s: kept, as mmcli cannot tell that it wrote it; it is not part of this comparison's report",
                        out / name)
    if result.attribution is not None:
        runs.write_json(out / "attribution.json", {**result.attribution, "higher_is_better": plan.higher_is_better})
    if result.per_class:
        runs.write_atomic(out / "per_class.csv", to_csv(result.per_class))
    if optional["compare.png"]:
        report.bar_chart(result, out / "compare.png")


def to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()
