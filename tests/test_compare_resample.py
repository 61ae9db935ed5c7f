"""The comparison's second test: the difference to the reference with the seeds and the
test split's sources drawn again (`mmcli.compare.resample`), beside the t-test over seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcli.compare import stats
from mmcli.compare.resample import Rows, _summed, versus
from mmcli.heads import make_task


def accuracy_rows(right: np.ndarray, groups: np.ndarray) -> Rows:
    return _summed([str(i) for i in range(len(right))], groups, right.astype(float)[:, None])


def mean_of(m):
    return m[..., 0]


def runs(right_by_seed: list[np.ndarray], groups: np.ndarray) -> dict[int, Rows]:
    return {s: accuracy_rows(r, groups) for s, r in enumerate(right_by_seed)}


def test_a_large_gain_on_many_test_examples_holds_beyond_them():
    rng = np.random.default_rng(1)
    n = 2000
    ref = [rng.random(n) < 0.6 for _ in range(5)]
    better = [r | (rng.random(n) < 0.5) for r in ref]  # about 20 points more, on every seed
    got = versus(runs(better, np.arange(n)), runs(ref, np.arange(n)), mean_of)
    assert got["p_resampled"] < 0.01 and got["resampled_sources"] == n
    delta = np.mean([b.mean() - r.mean() for b, r in zip(better, ref)])
    assert 0 < got["delta_resampled_low"] < delta < got["delta_resampled_high"]


def test_a_gain_of_two_examples_on_a_small_test_split_is_significant_over_seeds_only():
    """Every seed right on the same 2 examples more of 40: the t-test over seeds sees a
    steady gain of 5 points; drawing the 40 examples again shows how little 2 of them say."""
    rng = np.random.default_rng(2)
    n = 40
    ref = np.arange(n) < 20
    ref_runs = [ref.copy() for _ in range(5)]
    var_runs = []
    for s in range(5):
        v = ref.copy()
        v[20:22] = True  # the same two examples more, on every seed
        v[22:22 + s % 2] = True  # and one more on every other seed, so that the t-test has a variance
        var_runs.append(v)
    diffs = [v.mean() - r.mean() for v, r in zip(var_runs, ref_runs)]
    assert stats.paired_t_test(diffs) < 0.001
    got = versus(runs(var_runs, np.arange(n)), runs(ref_runs, np.arange(n)), mean_of)
    assert got["p_resampled"] > 0.05 and got["delta_resampled_low"] <= 0


def test_rows_of_one_source_are_drawn_together():
    """Five rows of each photo (its captions) are one source: as many rows as 5 times
    more photos, but the evidence of fewer, so a wider interval than rows drawn alone."""
    rng = np.random.default_rng(3)
    photos = 60
    ref = [rng.random(photos) < 0.5] * 4  # every seed alike: only the drawing of the test split varies
    var = [ref[0] | (rng.random(photos) < 0.25)] * 4
    by_photo = np.repeat(np.arange(photos), 5)
    grouped = versus(runs([np.repeat(v, 5) for v in var], by_photo), runs([np.repeat(r, 5) for r in ref], by_photo), mean_of)
    alone = np.arange(photos * 5)
    apart = versus(runs([np.repeat(v, 5) for v in var], alone), runs([np.repeat(r, 5) for r in ref], alone), mean_of)
    assert grouped["resampled_sources"] == photos and apart["resampled_sources"] == photos * 5
    width = lambda g: g["delta_resampled_high"] - g["delta_resampled_low"]  # noqa: E731
    assert width(grouped) > 1.8 * width(apart)  # about sqrt(5) wider


def test_no_resampled_test_without_two_seeds_or_on_other_rows():
    groups = np.arange(10)
    one = runs([np.ones(10, bool)], groups)
    assert versus(one, one, mean_of) is None
    a = runs([np.ones(10, bool)] * 2, groups)
    b = {s: Rows([f"x{i}" for i in range(10)], r.sources, r.sums) for s, r in a.items()}
    assert versus(a, b, mean_of) is None


def test_identical_runs_are_not_different():
    rng = np.random.default_rng(4)
    same = runs([rng.random(50) < 0.5 for _ in range(3)], np.arange(50))
    got = versus(same, same, mean_of)
    assert got["p_resampled"] == 1.0 and got["delta_resampled_low"] == got["delta_resampled_high"] == 0.0


def test_the_verdict_says_when_a_difference_holds_on_these_examples_only():
    row = {"reference": "unimodal:image", "delta_vs_reference": 0.05, "p_value": 0.001, "p_holm": 0.003,
           "holm_tests": 3, "n_paired": 5, "n": 5, "p_resampled_holm": 0.4, "resampled_sources": 73}
    said = stats.verdict(row)
    assert said.startswith("better than the best single modality (not beyond these test examples")
    assert "73 sources" in said and "p 0.4" in said
    assert stats.verdict({**row, "p_resampled_holm": 0.01}) == "better than the best single modality"
    assert stats.verdict({**row, "p_resampled_holm": None}) == "better than the best single modality"


@pytest.mark.parametrize("task_name, metrics", [("classification", ("accuracy", "macro_f1", "loss")),
                                                ("regression", ("mae", "rmse", "r2", "loss")),
                                                ("multilabel", ("micro_f1", "macro_f1", "subset_accuracy", "loss"))])
def test_row_statistics_give_back_the_task_s_own_scores(task_name, metrics):
    """The metric made from the rows' mean statistics is the one `evaluate` gives."""
    from mmcli.config import Config

    config = Config()
    config.model.task = task_name
    torch.manual_seed(0)
    if task_name == "classification":
        task = make_task(config, {})
        outputs, targets = torch.randn(300, 6), torch.cat([torch.randint(0, 5, (299,)), torch.tensor([5])])
        names = [str(i) for i in range(6)]
    elif task_name == "multilabel":  # the run's own thresholds, not 0.5
        task = make_task(config, {"thresholds": [0.3, 0.5, 0.7, 0.45]})
        outputs, targets = torch.randn(300, 4), (torch.rand(300, 4) < 0.3).float()
        targets[:, 3] = 0  # a label no test row has
        names = list("abcd")
    else:
        task = make_task(config, {"mean": 3.0, "std": 2.5})
        outputs, targets = torch.randn(300, 1), torch.randn(300)
        names = ["y"]
    scores = task.evaluate(outputs, targets, names)
    for metric in metrics:
        stats_, metric_of = task.row_statistics(outputs, targets, metric)
        assert stats_.shape[0] == 300
        assert float(metric_of(stats_.mean(axis=0))) == pytest.approx(scores[metric], rel=1e-6), metric
    assert task.row_statistics(outputs, targets, "not a metric") is None
    assert task.row_statistics(outputs, targets, "mean_average_precision") is None


def test_many_variants_get_enough_draws_for_a_clear_gain_to_survive_holm():
    """With 60 variants tested, 2,000 draws could not give a p below 2 x 60 / 2,001 after
    Holm's adjustment, and every verdict would say "not beyond these test examples"."""
    from mmcli.compare import stats as st
    from mmcli.compare.resample import add

    rng = np.random.default_rng(5)
    ref = [rng.random(100) < 0.3 for _ in range(2)]
    found = {"ref": runs(ref, np.arange(100))}
    rows = [{"variant": "ref", "reference": "ref", "is_reference": True}]
    for k in range(60):
        found[f"v{k}"] = runs([r | (rng.random(100) < 0.7) for r in ref], np.arange(100))
        rows.append({"variant": f"v{k}", "reference": "ref", "is_reference": False})
    add(rows, found, mean_of)
    adjusted = st.holm([r["p_resampled"] for r in rows])
    assert rows[0]["p_resampled"] is None and all(p < 0.05 for p in adjusted[1:])


def test_macro_f1_over_many_classes_is_drawn_from_sparse_sums():
    task_rows = []
    rng = np.random.default_rng(6)
    from mmcli.config import Config

    task = make_task(Config(), {})
    targets = torch.from_numpy(rng.integers(0, 200, 3000))
    for gain in (0.0, 0.3):
        seeds = {}
        for s in range(3):
            logits = torch.randn(3000, 200)
            right = torch.from_numpy(rng.random(3000) < 0.4 + gain)
            logits[right, targets[right]] += 100.0
            stats_, metric_of = task.row_statistics(logits, targets, "macro_f1")
            seeds[s] = _summed([str(i) for i in range(3000)], np.arange(3000), stats_)
        task_rows.append(seeds)
    got = versus(task_rows[1], task_rows[0], metric_of)
    assert got["p_resampled"] < 0.01 and 0.15 < got["delta_resampled_low"] < got["delta_resampled_high"] < 0.45
