"""Issue 22's metrics (mmcli.evaluation.verification) against cases counted by hand and
against scikit-learn's ROC."""

from __future__ import annotations

import numpy as np
import pytest

from mmcli.evaluation import verification as v

# same-identity trials score 0.9, 0.6, 0.4; different-identity ones 0.7, 0.3, 0.2
SCORES = [0.9, 0.6, 0.4, 0.7, 0.3, 0.2]
SAME = [True, True, True, False, False, False]


def test_a_known_trial_list_counted_by_hand():
    # accepting at 0.6 lets 0.9 and 0.6 (same) and 0.7 (different) through: FAR 1/3, FRR 1/3
    rate, threshold = v.eer(SCORES, SAME)
    assert rate == pytest.approx(1 / 3) and threshold == pytest.approx(0.6)
    # the cheapest decision at p_target 0.01 accepts only 0.9: cost 0.01 * 2/3, over min(0.01, 0.99)
    dcf = v.min_dcf(SCORES, SAME)
    assert dcf["min_dcf_raw"] == pytest.approx(0.01 * 2 / 3) and dcf["min_dcf"] == pytest.approx(2 / 3)
    assert dcf["threshold"] == pytest.approx(0.9)
    assert v.tar_at_far(SCORES, SAME, 1e-2) == pytest.approx(1 / 3)  # no false accept allowed: only 0.9
    assert v.tar_at_far(SCORES, SAME, 0.34) == pytest.approx(1.0)  # one false accept allowed: every same trial
    scores = v.verification_scores(SCORES, SAME, threshold=0.5)
    assert scores["roc_auc"] == pytest.approx(7 / 9)  # 7 of the 9 (same, different) pairs are ordered right
    assert scores["far"] == pytest.approx(1 / 3) and scores["frr"] == pytest.approx(1 / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6) and scores["n_trials"] == 6 and scores["n_same"] == 3


def test_perfect_and_reversed_scores():
    perfect = v.verification_scores([0.9, 0.8, 0.1, 0.2], [True, True, False, False])
    assert perfect["eer"] == 0.0 and perfect["min_dcf"] == 0.0 and perfect["tar_at_far_1e-3"] == 1.0
    assert perfect["roc_auc"] == 1.0
    reversed_ = v.verification_scores([0.1, 0.2, 0.9, 0.8], [True, True, False, False])
    assert reversed_["eer"] == 1.0 and reversed_["tar_at_far_1e-2"] == 0.0 and reversed_["roc_auc"] == 0.0
    assert reversed_["min_dcf"] == pytest.approx(1.0)  # no threshold beats rejecting everything


def test_against_scikit_learn_and_a_threshold_sweep():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    same = np.r_[np.ones(300, bool), np.zeros(700, bool)]
    scores = np.where(same, rng.normal(1.0, 1.0, 1000), rng.normal(0.0, 1.0, 1000))
    fpr, tpr, _ = v.roc(scores, same)
    ref_fpr, ref_tpr, _ = roc_curve(same, scores, drop_intermediate=False)
    assert np.array_equal(fpr, ref_fpr) and np.array_equal(tpr, ref_tpr)
    # a direct sweep: at each score as threshold, FAR and FRR counted item by item
    sweep = []
    for t in np.sort(scores):
        far = np.mean(scores[~same] >= t)
        frr = np.mean(scores[same] < t)
        sweep.append((far, frr, t))
    crossing = min(sweep, key=lambda r: abs(r[0] - r[1]))
    rate, _ = v.eer(scores, same)
    assert abs(rate - (crossing[0] + crossing[1]) / 2) <= 1 / 300  # within one trial's step
    best_cost = min(0.01 * frr + 0.99 * far for far, frr, _ in sweep)
    assert v.min_dcf(scores, same)["min_dcf_raw"] == pytest.approx(min(best_cost, 0.01), abs=1e-12)
    strict = max((1 - frr for far, frr, _ in sweep if far <= 1e-2), default=0.0)
    assert v.tar_at_far(scores, same, 1e-2) == pytest.approx(strict)


def test_rank1_and_bad_inputs():
    sim = np.array([[0.9, 0.1, 0.2], [0.3, 0.2, 0.8], [0.5, 0.6, 0.1]])
    assert v.rank1(sim, ["a", "c", "a"], ["a", "b", "c"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="both"):
        v.eer([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="same length"):
        v.eer([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="finite"):
        v.eer([0.1, float("nan")], [True, False])
