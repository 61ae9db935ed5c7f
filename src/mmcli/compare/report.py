"""A comparison's report.md and compare.png, from its collected result (`mmcli.compare.collect`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcli.compare import crossfit, degraded, ensemble, stats
from mmcli.data.splits import FEW_VALIDATION

if TYPE_CHECKING:
    from mmcli.compare.collect import CompareResult
    from mmcli.compare.runner import Plan


def _f(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(low: Any, high: Any) -> str:
    return "–" if low is None else f"[{low:.4f}, {high:.4f}]"


def markdown(result: CompareResult, plan: Plan) -> str:
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
             f"{plan.seeds} seed(s) per variant, the same splits and budget rule for every run (a run still learning when its "
             "learning rate has decayed trains another cycle, docs/your-data.md). Mean over seeds with "
             f"a 95 % Student t-interval; delta is the difference to {against}, paired by seed, "
             f"with its 95 % t-interval and the p-value of a {stats.TEST_NAME}; p (Holm) is that p-value adjusted for "
             "the number of variants tested against the same reference (Holm, 1979). Every seed scores the same test "
             "split, so those say whether a difference comes back when the models are trained again, on these test "
             "examples; the columns \"test resampled\" say whether it holds beyond them: the same difference with "
             "the seeds and the test split's sources (a photo with all its captions) drawn again, 2,000 times or more "
             "(a two-level bootstrap: its 95 % percentile interval, and its two-sided p after Holm's adjustment). "
             f"{'Higher' if plan.higher_is_better else 'Lower'} is better.", ""]
    if any(ensemble.is_ensemble(v) for v in plan.variants):
        lines += [f"`{ensemble.NAME}` trains nothing: for each seed it averages the predictions of that seed's unimodal "
                  "runs (late fusion; probabilities for classes and labels, values for regression), "
                  + _ensemble_weights(result, plan), ""]
    warmed = sorted({c["variant"] for c in plan.cells if c.get("after")})
    if warmed:
        lines += [f"Warm start: each run of {', '.join(f'`{v}`' for v in warmed)} started its encoders and per-modality "
                  "heads from the unimodal runs of its seed, then trained with them at `train.trained_lr_scale` times "
                  "the learning rate (`--no-warm-start` trains from scratch).", ""]
    if result.missing:
        lines += [f"**Incomplete**: {len(result.missing)} run(s) have no result yet: " + "; ".join(result.missing), ""]
    lines += [f"| variant | n | mean | std | 95 % CI | delta vs {result.reference or 'best unimodal'} | delta 95 % CI | p | "
              "p (Holm) | delta 95 % CI, test resampled | p (Holm), test resampled | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.summary:
        lines.append(f"| {r['variant']} | {r['n']} | {_f(r['mean'])} | {_f(r['std'])} | {_interval(r['ci_low'], r['ci_high'])} | "
                     f"{_f(r['delta_vs_reference'])} | {_interval(r['delta_ci_low'], r['delta_ci_high'])} | "
                     f"{_f(r['p_value'], 3)} | {_f(r.get('p_holm'), 3)} | "
                     f"{_interval(r.get('delta_resampled_low'), r.get('delta_resampled_high'))} | "
                     f"{_f(r.get('p_resampled_holm'), 3)} | {r['verdict']} |")
    if plan.seeds < 2:
        lines += ["", "One seed: no interval or test can be given. Run with `--seeds 3` or more."]
    prior = (plan.baseline or {}).get(plan.metric)
    if prior is not None:
        lines += ["", f"The label prior, a model that sees no input and predicts from the training split's labels alone, "
                  f"scores {_f(prior)} on the test split."]
    if result.unlearnt:
        lines += ["", f"**Nothing learnt**: {result.unlearnt}."]
    return lines


def _ensemble_weights(result: CompareResult, plan: Plan) -> str:
    names = {v.name for v in plan.variants if ensemble.is_ensemble(v)}
    weights = {(r["variant"], r["seed"]): r["weights"] for r in result.results if r["variant"] in names and r.get("weights")}
    if not weights and plan.val_sources is None:
        return "with equal weights (this comparison was planned by an mmcli that did not weigh them)."
    if not weights and any(crossfit.is_fold(c) for c in plan.cells):
        return ("with equal weights: the fold runs that choose them on out-of-fold predictions (the validation split "
                f"holding fewer than {FEW_VALIDATION} sources) have not all finished.")
    if not weights:
        return ("with equal weights (chosen on the validation split only where it holds at least "
                f"{FEW_VALIDATION} sources, else on out-of-fold predictions where the training split has enough, "
                "unless --ensemble-folds is 0).")
    said = "; ".join((f"`{v}` " if len(names) > 1 else "") + f"seed {s}: " + ", ".join(f"{m} {w:.2f}" for m, w in ws.items())
                     for (v, s), ws in sorted(weights.items()))
    folded = any(r.get(ensemble.WEIGHED_ON) == "out-of-fold" for r in result.results if r["variant"] in names)
    where = (f"on out-of-fold predictions of the training split, the validation split holding fewer than {FEW_VALIDATION} "
             f"sources ({plan.folds} folds: each unimodal run trained again without each fold, which it then predicted)"
             if folded else "on the validation split")
    return f"each weighted as chosen {where} (the best {result.metric} of the average, the most even among equals): {said}."


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
             + (f"; for `{ensemble.NAME}`, the average of the other modalities' runs"
                if any(r["variant"].startswith(ensemble.NAME) for r in robust) else "")
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
