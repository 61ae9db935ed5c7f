"""Per-variant statistics over seeds: mean, std, a 95 % t-interval, and the paired
difference to the best unimodal variant with a paired t-test (Student, 1908)."""

from __future__ import annotations

import math
from typing import Any


def describe(values: list[float]) -> dict[str, Any]:
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "ci95_low": None, "ci95_high": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "ci95_low": mean - half, "ci95_high": mean + half}


def paired(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """Difference to the reference, paired by seed; p-value of a two-sided paired t-test."""
    from scipy import stats

    seeds = sorted(set(values) & set(reference))
    diffs = [values[s] - reference[s] for s in seeds]
    if not diffs:
        return {"delta": None, "delta_ci95_low": None, "delta_ci95_high": None, "p_value": None}
    d = describe(diffs)
    p = None
    if len(diffs) >= 2:
        if d["std"] == 0:
            p = 1.0 if d["mean"] == 0 else None  # the t statistic is undefined
        else:
            p = float(stats.ttest_rel([values[s] for s in seeds], [reference[s] for s in seeds]).pvalue)
    return {"delta": d["mean"], "delta_ci95_low": d["ci95_low"], "delta_ci95_high": d["ci95_high"], "p_value": p}


def verdict(row: dict[str, Any], higher_is_better: bool = True, alpha: float = 0.05) -> str:
    if row["family"] == "unimodal" and row.get("is_best_unimodal"):
        return "best single modality (reference)"
    delta, p = row.get("delta_vs_best_unimodal"), row.get("p_value")
    if delta is None:
        return "no reference"
    if p is None and row.get("n", 0) < 2:
        return "one seed: no interval or test; run with --seeds 3 or more"
    if p is None:
        return "undetermined: every seed differs by the same amount, so no test applies"
    if p >= alpha:
        return "no significant difference from the best single modality"
    better = delta > 0 if higher_is_better else delta < 0
    return "better than the best single modality" if better else "worse than the best single modality"
