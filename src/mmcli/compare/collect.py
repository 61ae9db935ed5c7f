"""Collect a comparison's cell results into its reports.

Everything here reads only the plan (`compare.json`) and the cells' `compare-result.json`
files, so a plain run, `--jobs N` and `--collect DIR` after `--print-jobs` all end in the
same summary. Outputs, all directly in the comparison folder: `results.csv` (a row per
cell), `summary.csv` and `summary.json` (a row per variant), `attribution.json` (when the
`subsets` family is complete), `per_class.csv`, `report.md` and `compare.png`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmcli import ledger, runs
from mmcli.compare import attribution as attr
from mmcli.compare import degraded
from mmcli.compare import ensemble, stats
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
            result.missing.append(f"job {k}: {cell['variant']} seed {cell['seed']}")
        else:
            saved[k] = found
    pairs = [(plan.cells[k], r, None if reused is None else k in reused) for k, r in saved.items()]
    pairs += [(cell, r, None) for cell, r in ensemble.results(out, plan, saved)]  # computed, never run
    result.results = [_row(plan, cell, r, again) for cell, r, again in pairs]
    result.summary = summarise(result.results, plan, reference)
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
    return row


def _values(results: list[dict[str, Any]], variant: str, key: str = "value") -> dict[int, float]:
    return {r["seed"]: r[key] for r in results if r["variant"] == variant and r[key] is not None}


def summarise(results: list[dict[str, Any]], plan: Plan, reference: str | None = None) -> list[dict[str, Any]]:
    """A row per variant: its statistics and its paired difference to the reference (the
    variant chosen with --reference, or else the best unimodal one)."""
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
    tests = sum(r["p_value"] is not None for r in rows)
    for row, adjusted in zip(rows, stats.holm([r["p_value"] for r in rows])):
        row["p_holm"], row["holm_tests"] = adjusted, tests
        row["verdict"] = stats.verdict(row, plan.higher_is_better, chosen=reference is not None)
    return rows


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
    runs.write_atomic(out / "report.md", report_markdown(result, plan))
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
        bar_chart(result, out / "compare.png")


def to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def _f(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(low: Any, high: Any) -> str:
    return "–" if low is None else f"[{low:.4f}, {high:.4f}]"


def report_markdown(result: CompareResult, plan: Plan) -> str:
    lines = _summary_section(result, plan) + _tuning_section(plan) + _missing_section(result)
    lines += degraded.section(plan, result.summary, result.reference or next(
        (r["variant"] for r in result.summary if r.get("is_reference")), None))
    lines += _translation_section(result, plan)
    lines += _attribution_section(result, plan)
    lines += _per_class_section(result, plan)
    lines += ["", "Files: results.csv (one row per run), summary.csv / summary.json (one row per variant), "
              "per_class.csv, attribution.json (with the subsets family), compare.png.", ""]
    return "\n".join(lines)


def _summary_section(result: CompareResult, plan: Plan) -> list[str]:
    against = f"`{result.reference}` (chosen with --reference)" if result.reference else "the best unimodal variant"
    lines = [f"# Comparison on {result.metric}", "",
             f"Command: `{result.command}`" if result.command else "", "",
             f"{plan.seeds} seed(s) per variant, the same splits and budget for every run. Mean over seeds with "
             f"a 95 % Student t-interval; delta is the difference to {against}, paired by seed, "
             f"with its 95 % t-interval and the p-value of a {stats.TEST_NAME}; p (Holm) is that p-value adjusted for "
             "the number of variants tested against the same reference (Holm, 1979). "
             f"{'Higher' if plan.higher_is_better else 'Lower'} is better.", ""]
    if any(ensemble.is_ensemble(v) for v in plan.variants):
        lines += [f"`{ensemble.NAME}` trains nothing: for each seed it averages the predictions of that seed's unimodal "
                  "runs (late fusion; probabilities for classes and labels, values for regression).", ""]
    warmed = sorted({c["variant"] for c in plan.cells if c.get("after")})
    if warmed:
        lines += [f"Warm start: each run of {', '.join(f'`{v}`' for v in warmed)} started its encoders and per-modality "
                  "heads from the unimodal runs of its seed, then trained with them at `train.trained_lr_scale` times "
                  "the learning rate (`--no-warm-start` trains from scratch).", ""]
    if result.missing:
        lines += [f"**Incomplete**: {len(result.missing)} run(s) have no result yet: " + "; ".join(result.missing), ""]
    lines += [f"| variant | n | mean | std | 95 % CI | delta vs {result.reference or 'best unimodal'} | delta 95 % CI | p | "
              "p (Holm) | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.summary:
        lines.append(f"| {r['variant']} | {r['n']} | {_f(r['mean'])} | {_f(r['std'])} | {_interval(r['ci_low'], r['ci_high'])} | "
                     f"{_f(r['delta_vs_reference'])} | {_interval(r['delta_ci_low'], r['delta_ci_high'])} | "
                     f"{_f(r['p_value'], 3)} | {_f(r.get('p_holm'), 3)} | {r['verdict']} |")
    if plan.seeds < 2:
        lines += ["", "One seed: no interval or test can be given. Run with `--seeds 3` or more."]
    return lines


def _tuning_section(plan: Plan) -> list[str]:
    """--tune: the space, and per variant the chosen values and the trials' validation scores."""
    if plan.tune is None:
        return []
    from mmcli.compare.tune import describe

    space = "; ".join(f"`{k}` in {', '.join(str(v) for v in values)}" for k, values in plan.tune["space"].items())
    trials = plan.tune.get("trials")
    if trials is not None and trials >= math.prod(len(values) for values in plan.tune["space"].values()):
        trials = None  # the whole grid ran
    lines = ["", "## Tuning", "",
             f"Every trained variant had the same search: {space}"
             f"{f' ({trials} points of the grid, drawn with the base seed)' if trials else ' (the whole grid)'}. "
             f"Each trial trained with seed {plan.base_config().train.seed} on the training split and was scored on the "
             f"validation split ({plan.metric}); the test split was not read. The best setting was used for every seed "
             "of the variant (trials in `tune/`).", "",
             f"| variant | chosen | validation {plan.metric} | trials (validation, worst to best) |", "|---|---|---|---|"]
    for v in plan.variants:
        t = plan.tuned.get(v.name)
        if t is None:
            continue
        scores = sorted(x["score"] for x in t["trials"] if x["score"] is not None)
        if not plan.higher_is_better:
            scores.reverse()
        span = f"{_f(scores[0])} to {_f(scores[-1])}" if scores else "no finite score: the configured values"
        lines.append(f"| {v.name} | {describe(t['values'])} | {_f(t['score'])} | {len(t['trials'])} ({span}) |")
    return lines


def _missing_section(result: CompareResult) -> list[str]:
    mods = result.modalities
    robust = [r for r in result.summary if any(r.get(f"without_{m}") is not None for m in mods)]
    if not robust:
        return []
    lines = ["", "## Missing modalities", "",
             f"{result.metric} on the test split with one modality missing (its input absent, as `mmcli evaluate --drop`"
             + (f"; for `{ensemble.NAME}`, the average of the other modalities' runs" if any(r["variant"] == ensemble.NAME for r in robust) else "")
             + "); in brackets the change from the clean score.", "",
             "| variant | clean | " + " | ".join(f"without {m}" for m in mods) + " |",
             "|---|---|" + "---|" * len(mods)]
    for r in robust:
        cells = []
        for m in mods:
            w = r.get(f"without_{m}")
            cells.append("–" if w is None else f"{w:.4f} ({w - r['mean']:+.4f})")
        lines.append(f"| {r['variant']} | {_f(r['mean'])} | " + " | ".join(cells) + " |")
    return lines


def _translation_section(result: CompareResult, plan: Plan) -> list[str]:
    rows = [r for r in result.summary if r.get("others_missing") is not None]
    if not rows:
        return []
    means = {r["variant"]: r["mean"] for r in result.summary}
    lines = ["", "## Cross-modal translation", "",
             f"{result.metric} of each translation variant on the test split with every modality but its source "
             "missing, beside the unimodal model of the source (same seeds and budget).", "",
             "| variant | source | others missing | unimodal source | difference |", "|---|---|---|---|---|"]
    for r in rows:
        source = next(v.modalities[0] for v in plan.variants if v.name == r["variant"])
        uni = means.get(f"unimodal:{source}")
        diff = "–" if uni is None else f"{r['others_missing'] - uni:+.4f}"
        lines.append(f"| {r['variant']} | {source} | {_f(r['others_missing'])} | {_f(uni)} | {diff} |")
    return lines


def _attribution_section(result: CompareResult, plan: Plan) -> list[str]:
    lines = ["", "## Modality attribution", ""]
    a = result.attribution
    if a is None:
        return lines + ["Run the `subsets` family (every non-empty subset of the modalities) to get each modality's "
                        "Shapley value."]
    lines += [f"{a['method']}. Fusion: {a['fusion']}; seeds: {', '.join(map(str, a['seeds']))}; "
              f"empty set: {a['empty_set']:.4f}. The Shapley values add up to v(all) - v(empty)"
              + ("." if plan.higher_is_better else f"; {result.metric} is lower-is-better, so a negative value is a gain."), "",
              "| modality | Shapley value | 95 % CI |", "|---|---|---|"]
    lines += [f"| {m} | {_f(s['mean'])} | {_interval(s['ci_low'], s['ci_high'])} |" for m, s in a["shapley"].items()]
    lines += ["", "| pair | interaction | 95 % CI | reading |", "|---|---|---|---|"]
    sign = 1 if plan.higher_is_better else -1  # for a lower-is-better metric a negative interaction is synergy
    for pair, s in a["interaction"].items():
        gain = sign * s["mean"]
        reading = "synergy" if gain > 0 else "redundancy" if gain < 0 else "none"
        lines.append(f"| {pair} | {_f(s['mean'])} | {_interval(s['ci_low'], s['ci_high'])} | {reading} |")
    return lines


def _per_class_section(result: CompareResult, plan: Plan) -> list[str]:
    if not result.per_class:
        return []
    best = next((s["best_unimodal"] for s in result.summary if s["best_unimodal"]), None)
    table = {(r["variant"], r["class"]): r for r in result.per_class}
    classes = list(dict.fromkeys(r["class"] for r in result.per_class))
    others = [v.name for v in plan.variants if v.name != best]
    lines = ["", "## Per-class differences", "",
             f"F1 per class, mean over seeds: the best unimodal variant ({best}) and each other variant's difference to it.", "",
             f"| class | {best} | " + " | ".join(others) + " |", "|---|---|" + "---|" * len(others)]
    for c in classes:
        ref = table.get((best, c))
        cells = [_f(table[(v, c)]["delta_vs_best_unimodal"], 3) if (v, c) in table else "–" for v in others]
        lines.append(f"| {c} | {_f(ref['f1'], 3) if ref else '–'} | " + " | ".join(cells) + " |")
    return lines


def bar_chart(result: CompareResult, path: Path) -> None:
    """Mean per variant with its 95 % interval as error bars, coloured by family."""
    from mmcli.reporting.plots import figure, save_png

    rows = [r for r in result.summary if r["mean"] is not None]
    colours = {"unimodal": "#4c72b0", "multimodal": "#dd8452", "subsets": "#55a868", "crossmodal": "#8172b3"}
    fig, ax = figure(max(4.0, 0.7 * len(rows) + 1.5), 3.8)
    means = [r["mean"] for r in rows]
    errors = [[r["mean"] - r["ci_low"] if r["ci_low"] is not None else 0 for r in rows],
              [r["ci_high"] - r["mean"] if r["ci_high"] is not None else 0 for r in rows]]
    ax.bar(range(len(rows)), means, yerr=errors, capsize=4, color=[colours.get(r["family"], "grey") for r in rows])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["variant"] for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(result.metric)
    n = max(r["n"] for r in rows)
    ax.set_title(f"{result.metric}: mean over {n} seed(s)" + (", 95 % CI" if n > 1 else ""), fontsize=10)
    save_png(fig, path)
