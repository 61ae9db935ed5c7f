"""Per-variant statistics over seeds.

- mean, sample standard deviation and a 95 % Student t confidence interval of the mean;
- the difference to a reference variant paired by seed, its 95 % t-interval and the
  p-value of a two-sided paired t-test (Student, 1908): t = mean(d) / (sd(d) / sqrt(n)),
  n - 1 degrees of freedom;
- the same difference with the test split's sources drawn again beside the seeds
  (`mmcli.compare.resample`), which says whether it holds beyond these test examples;
- Holm's (1979) adjustment of those p-values over the variants tested against the same
  reference, which keeps the chance of any false "better" or "worse" among them at most 5 %;
- a verdict in plain words.

With one value there is no interval and no test: the fields are None and the verdict says so.
"""

from __future__ import annotations

import math
from typing import Any

TEST_NAME = "two-sided paired t-test over seeds"
LEVEL = 0.95


def describe(values: list[float]) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "std": None, "ci_low": None, "ci_high": None, "n": n}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + LEVEL / 2, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def t_quantile(q: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def paired_t_test(diffs: list[float]) -> float | None:
    """Two-sided p-value of H0: mean difference = 0; None when it is undefined."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return None
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if std <= 1e-12 * max(1.0, abs(mean)):
        return 1.0 if abs(mean) <= 1e-12 else None  # identical runs / a constant shift: no t statistic
    t = mean / (std / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


def paired(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """The difference to the reference over the seeds both have."""
    seeds = sorted(set(values) & set(reference))
    diffs = [values[s] - reference[s] for s in seeds]
    d = describe(diffs)
    return {"delta": d["mean"], "delta_ci_low": d["ci_low"], "delta_ci_high": d["ci_high"],
            "p_value": paired_t_test(diffs), "n_paired": len(diffs)}


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment: with m tests, the k-th smallest p-value times m - k + 1,
    never below the adjusted one before it, at most 1; None (no test) stays None."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - k) * p))
        adjusted[i] = running
    return adjusted


def verdict(row: dict[str, Any], higher_is_better: bool = True, alpha: float = 0.05, chosen: bool = False) -> str:
    """The row's difference to its reference in words: the best single modality, or the
    variant named by `reference` when the user chose it (`chosen`)."""
    if row.get("is_reference"):
        return "reference" if chosen else "best single modality (reference)"
    against = row.get("reference") if chosen else "the best single modality"
    delta, p = row.get("delta_vs_reference"), row.get("p_value")
    if row.get("n", 1) == 0:
        return "no results yet"
    if row.get("reference") is None and delta is None:
        return "no reference (no unimodal variant in the comparison)"
    if delta is None:
        return f"no seed in common with {against}"
    if row.get("n_paired", 0) < 2:
        return "one seed: no interval or test can be given; run with --seeds 3 or more"
    if p is None:
        return "undetermined: every seed differs by the same amount, so no test applies"
    if p >= alpha:
        return f"no significant difference from {against}"
    better = delta > 0 if higher_is_better else delta < 0
    said = f"{'better' if better else 'worse'} than {against}"
    if row.get("p_holm") is not None and row["p_holm"] >= alpha:
        return f"{said} (not after Holm's correction for {row['holm_tests']} tests)"
    if row.get("p_resampled_holm") is not None and row["p_resampled_holm"] >= alpha:
        return (f"{said} (not beyond these test examples: with the test split's {row['resampled_sources']} "
                f"sources drawn again, p {row['p_resampled_holm']:.2g} after Holm)")
    return said
