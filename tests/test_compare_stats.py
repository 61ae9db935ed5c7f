"""The statistics and the attribution of `compare`, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from mmcli.compare import attribution as attr
from mmcli.compare import stats


def test_interval_of_three_values_by_hand():
    # mean 0.85, sd 0.05; t(0.975, 2) = 4.302653; half width = 4.302653 * 0.05 / sqrt(3) = 0.124207
    d = stats.describe([0.80, 0.85, 0.90])
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(0.85)
    assert d["std"] == pytest.approx(0.05)
    assert d["ci_low"] == pytest.approx(0.85 - 0.124207, abs=1e-6)
    assert d["ci_high"] == pytest.approx(0.85 + 0.124207, abs=1e-6)


def test_one_value_has_no_interval():
    d = stats.describe([0.7])
    assert d == {"mean": 0.7, "std": None, "ci_low": None, "ci_high": None, "n": 1}


def test_paired_t_test_by_hand():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = 2 sqrt 3.
    # With 2 degrees of freedom the t CDF is 1/2 + t / (2 sqrt(2 + t^2)), so the two-sided
    # p-value is 1 - t / sqrt(2 + t^2) = 1 - sqrt(12 / 14) = 0.074180.
    values = {0: 0.6, 1: 0.8, 2: 0.7}
    reference = {0: 0.5, 1: 0.6, 2: 0.4}
    d = stats.paired(values, reference)
    assert d["delta"] == pytest.approx(0.2)
    assert d["p_value"] == pytest.approx(1 - math.sqrt(12 / 14), abs=1e-6)
    assert d["p_value"] == pytest.approx(0.074180, abs=1e-6)
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert d["delta_ci_low"] == pytest.approx(0.2 - half, abs=1e-6)
    assert d["n_paired"] == 3


def test_pairs_only_the_seeds_both_have():
    d = stats.paired({0: 0.9, 1: 0.8, 5: 0.1}, {0: 0.7, 1: 0.7, 2: 0.0})
    assert d["n_paired"] == 2 and d["delta"] == pytest.approx(0.15)


def test_identical_runs_and_constant_shifts():
    assert stats.paired({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})["p_value"] == 1.0
    assert stats.paired({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6})["p_value"] is None  # no spread: t undefined


@pytest.mark.parametrize("row, higher, chosen, expected", [
    ({"is_reference": True}, True, False, "best single modality (reference)"),
    ({"is_reference": True}, True, True, "reference"),
    ({"delta_vs_reference": 0.05, "p_value": 0.01, "n_paired": 3}, True, False, "better than the best single modality"),
    ({"delta_vs_reference": 0.05, "p_value": 0.01, "n_paired": 3}, False, False, "worse than"),
    ({"delta_vs_reference": -0.05, "p_value": 0.01, "n_paired": 3}, False, False, "better than"),
    ({"delta_vs_reference": 0.05, "p_value": 0.2, "n_paired": 3}, True, False, "no significant difference"),
    ({"delta_vs_reference": 0.05, "p_value": None, "n_paired": 1}, True, False, "one seed: no interval"),
    ({"delta_vs_reference": None, "p_value": None, "n_paired": 0, "reference": None}, True, False, "no reference"),
    ({"delta_vs_reference": None, "p_value": None, "n_paired": 0, "n": 0, "reference": "unimodal:a"}, True, False, "no results yet"),
    ({"delta_vs_reference": None, "p_value": None, "n_paired": 0, "n": 2, "reference": "unimodal:a"}, True, False, "no seed in common"),
    # --reference: the verdict names the chosen variant
    ({"delta_vs_reference": 0.05, "p_value": 0.01, "n_paired": 3, "reference": "unimodal:text"}, True, True, "better than unimodal:text"),
    ({"delta_vs_reference": 0.05, "p_value": 0.2, "n_paired": 3, "reference": "unimodal:text"}, True, True,
     "no significant difference from unimodal:text"),
])
def test_verdicts(row, higher, chosen, expected):
    assert stats.verdict(row, higher, chosen=chosen).startswith(expected)
    if expected.startswith(("better", "worse", "no significant")):
        assert stats.verdict(row, higher, chosen=chosen).endswith(row["reference"] if chosen else "the best single modality")


def test_holm_by_hand():
    # three tests: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to the 0.06 before it
    assert stats.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]  # never above 1
    assert stats.holm([0.02]) == [0.02] and stats.holm([None]) == [None]  # one test: nothing to adjust


def test_a_difference_that_holm_does_not_keep_is_named_so():
    row = {"delta_vs_reference": 0.004, "p_value": 0.018, "p_holm": 0.09, "holm_tests": 5, "n_paired": 5}
    assert stats.verdict(row) == "better than the best single modality (not after Holm's correction for 5 tests)"
    assert stats.verdict({**row, "p_holm": 0.04}) == "better than the best single modality"
    assert stats.verdict({**row, "p_value": 0.2, "p_holm": 0.6}) == "no significant difference from the best single modality"


def test_summary_adjusts_over_the_variants_tested_against_the_reference():
    from types import SimpleNamespace

    from mmcli.compare.collect import summarise

    plan = SimpleNamespace(variants=[SimpleNamespace(name=n, family=n.split(":")[0]) for n in
                                     ("unimodal:a", "unimodal:b", "multimodal:x", "multimodal:y")],
                           metric="accuracy", higher_is_better=True, modalities=[], tune=None, corruptions=[],
                           baseline=None)
    base = {0: 0.50, 1: 0.52, 2: 0.51}
    value = {"unimodal:a": base, "unimodal:b": {s: v - 0.2 + 0.01 * s for s, v in base.items()},
             "multimodal:x": {0: 0.60, 1: 0.61, 2: 0.63}, "multimodal:y": {0: 0.52, 1: 0.55, 2: 0.50}}
    results = [{"variant": n, "seed": s, "value": v, "without": {}, "others_missing": None} for n, per in value.items() for s, v in per.items()]
    summary = summarise(results, plan)
    rows = {r["variant"]: r for r in summary}
    assert list(summary[0])[list(summary[0]).index("test") + 1:][:3] == ["p_holm", "holm_tests", "verdict"]
    raw = [rows[n]["p_value"] for n in ("unimodal:b", "multimodal:x", "multimodal:y")]
    assert rows["unimodal:a"]["p_holm"] is None and rows["unimodal:a"]["holm_tests"] == 3  # the reference is not tested
    assert [rows[n]["p_holm"] for n in ("unimodal:b", "multimodal:x", "multimodal:y")] == pytest.approx(stats.holm(raw))
    assert rows["multimodal:x"]["p_holm"] > rows["multimodal:x"]["p_value"]


def _summary_against_prior(value: dict[str, dict[int, float]], prior: float | None, higher: bool = True,
                           metric: str | None = None):
    from types import SimpleNamespace

    from mmcli.compare.collect import learnt_nothing, summarise

    plan = SimpleNamespace(variants=[SimpleNamespace(name=n, family=n.split(":")[0]) for n in value],
                           metric=metric or ("accuracy" if higher else "mae"), higher_is_better=higher, modalities=[],
                           tune=None, corruptions=[],
                           baseline=None if prior is None else {metric or ("accuracy" if higher else "mae"): prior})
    results = [{"variant": n, "seed": s, "value": v, "without": {}, "others_missing": None} for n, per in value.items() for s, v in per.items()]
    summary = summarise(results, plan)
    return {r["variant"]: r for r in summary}, learnt_nothing(summary, plan)


def test_a_comparison_where_no_variant_beats_the_label_prior_says_so():
    # spoken COCO-mini's shape: the majority class is 30 % of the test rows, every variant near or below it
    value = {"unimodal:image": {0: 0.30, 1: 0.18, 2: 0.21, 3: 0.19, 4: 0.21},
             "unimodal:speech": {0: 0.28, 1: 0.29, 2: 0.30, 3: 0.28, 4: 0.30},
             "multimodal:sum": {0: 0.31, 1: 0.20, 2: 0.33, 3: 0.18, 4: 0.19}}
    rows, warning = _summary_against_prior(value, 0.3014)
    assert all(r["prior"] == 0.3014 and r["above_prior"] is False for r in rows.values())  # sum: 2 seeds of 5 above
    assert rows["unimodal:image"]["p_vs_prior"] == pytest.approx(stats.paired_t_test([v - 0.3014 for v in value["unimodal:image"].values()]))
    assert rows["unimodal:image"]["p_vs_prior"] < 0.05  # significantly below: still not above
    assert warning and "no variant is above the label prior's accuracy of 0.3014 on every seed" in warning
    # one variant clearly above the prior, even a fusion of two modalities useless alone: no warning
    rows, warning = _summary_against_prior({**value, "multimodal:concat": {0: 0.60, 1: 0.62, 2: 0.58, 3: 0.61, 4: 0.64}}, 0.3014)
    assert rows["multimodal:concat"]["above_prior"] is True and warning is None
    # no prior (a task without one): nothing to say; one seed: no test, and a better score counts
    rows, warning = _summary_against_prior(value, None)
    assert warning is None and rows["unimodal:image"]["above_prior"] is None
    rows, warning = _summary_against_prior({"unimodal:a": {0: 0.35}}, 0.3014)
    assert rows["unimodal:a"]["p_vs_prior"] is None and rows["unimodal:a"]["above_prior"] is True and warning is None
    # lower is better (regression's mae): below the prior is the good side
    rows, warning = _summary_against_prior({"unimodal:a": {0: 2.30, 1: 2.31, 2: 2.29}}, 2.0, higher=False)
    assert rows["unimodal:a"]["above_prior"] is False and "no variant is below the label prior's mae" in warning
    # not on the loss, which an over-confident model that learnt can have above the prior's
    rows, warning = _summary_against_prior({"unimodal:a": {0: 2.30, 1: 2.31, 2: 2.29}}, 2.0, higher=False, metric="loss")
    assert rows["unimodal:a"]["above_prior"] is False and warning is None
    # every seed better, however few seeds and whatever the t-test with 1 degree of freedom says
    rows, warning = _summary_against_prior({"unimodal:a": {0: 0.35, 1: 0.62}}, 0.3014)
    assert rows["unimodal:a"]["p_vs_prior"] > 0.05 and rows["unimodal:a"]["above_prior"] is True and warning is None


# --------------------------------------------------------------------------- Shapley

def _game(values: dict[str, float]):
    return lambda s: values["".join(sorted(s))]


def test_glove_game():
    # player a holds a left glove, b and c a right glove each; a pair is worth 1.
    # Closed form: phi_a = 2/3, phi_b = phi_c = 1/6.
    v = _game({"": 0, "a": 0, "b": 0, "c": 0, "ab": 1, "ac": 1, "bc": 0, "abc": 1})
    phi = attr.shapley(["a", "b", "c"], v)
    assert phi == pytest.approx({"a": 2 / 3, "b": 1 / 6, "c": 1 / 6})


def test_unanimity_game_and_its_interactions():
    # u_T with T = {a, b, c}: phi_i = 1/3 each; the interaction index of any pair is 1/(|T|-1) = 1/2
    v = lambda s: 1.0 if s >= {"a", "b", "c"} else 0.0  # noqa: E731
    assert attr.shapley(["a", "b", "c"], v) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert attr.interactions(["a", "b", "c"], v) == pytest.approx({("a", "b"): 0.5, ("a", "c"): 0.5, ("b", "c"): 0.5})


def test_additive_game_has_no_interaction_and_efficiency_holds():
    w = {"a": 0.1, "b": 0.25, "c": -0.05}
    v = lambda s: 0.3 + sum(w[p] for p in s)  # noqa: E731
    assert attr.shapley(list(w), v) == pytest.approx(w)
    assert all(abs(x) < 1e-12 for x in attr.interactions(list(w), v).values())


def test_redundant_pair_has_negative_interaction():
    # a and b carry the same information (either alone is worth 1), c nothing
    v = lambda s: 1.0 if s & {"a", "b"} else 0.0  # noqa: E731
    phi = attr.shapley(["a", "b", "c"], v)
    assert phi == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})
    inter = attr.interactions(["a", "b", "c"], v)
    assert inter[("a", "b")] == pytest.approx(-1.0) and inter[("a", "c")] == pytest.approx(0.0)
