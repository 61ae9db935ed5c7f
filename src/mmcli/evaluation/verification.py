"""Verification metrics as the field reports them (issue 22): trials are pairs of examples
with a score (higher: more alike) and a truth (same identity or not).

- EER: the error rate where the false-accept rate equals the false-reject rate, read on
  the ROC of scikit-learn's `roc_curve` and interpolated linearly between the two ROC points
  where the miss rate crosses the false-accept rate (as Kaldi's and SpeechBrain's recipes
  read it, up to their interpolation).
- minDCF: the least detection cost over thresholds, C_miss * P_miss * p_target +
  C_fa * P_fa * (1 - p_target), with p_target 0.01 and C_miss = C_fa = 1 by default,
  normalised by the cost of the best decision that ignores the score,
  min(C_miss * p_target, C_fa * (1 - p_target)) (NIST SRE, Kaldi's compute_min_dcf.py);
  `min_dcf_raw` is the cost before that division (what SpeechBrain's minDCF returns).
- TAR@FAR: the true-accept rate at the largest threshold whose false-accept rate is at
  most FAR (1e-2 and 1e-3, as face verification reports on IJB-C).
- rank-1 identification: the share of probes whose most similar gallery identity is theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

Scores = Union[Sequence[float], np.ndarray]  # a trial's score per trial
Truths = Union[Sequence[bool], np.ndarray]  # same identity or not, per trial


def _arrays(scores: Scores, same: Truths) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and truths must be two lists of the same length, not {s.shape} and {y.shape}")
    if not y.any() or y.all():
        raise ValueError("verification metrics need both same-identity and different-identity trials")
    if not np.isfinite(s).all():
        raise ValueError("a trial's score is not a finite number")
    return s, y


def roc(scores: Scores, same: Truths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-accept rates, true-accept rates, thresholds), every threshold (scikit-learn)."""
    from sklearn.metrics import roc_curve

    s, y = _arrays(scores, same)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thresholds


def roc_points(scores, same, most: int = 200) -> dict[str, list[float]]:
    """The ROC (false-accept and true-accept rates), at most `most` points kept evenly along
    it, for evaluate --plots' ROC and DET curves."""
    far, tar, _ = roc(scores, same)
    keep = np.unique(np.linspace(0, len(far) - 1, min(most, len(far))).round().astype(int))
    return {"far": [round(float(v), 6) for v in far[keep]], "tar": [round(float(v), 6) for v in tar[keep]]}


def eer(scores: Scores, same: Truths) -> tuple[float, float]:
    """(equal error rate, the threshold where it is reached)."""
    fpr, tpr, thresholds = roc(scores, same)
    fnr = 1.0 - tpr
    k = int(np.argmax(fnr <= fpr))  # the first ROC point where misses no longer exceed false accepts
    if k == 0:
        return float(fpr[0]), float(thresholds[0])
    d0, d1 = fnr[k - 1] - fpr[k - 1], fnr[k] - fpr[k]  # d0 > 0 >= d1
    t = d0 / (d0 - d1)
    rate = fpr[k - 1] + t * (fpr[k] - fpr[k - 1])
    threshold = thresholds[k - 1] + t * (thresholds[k] - thresholds[k - 1]) if np.isfinite(thresholds[k - 1]) else thresholds[k]
    return float(rate), float(threshold)


def min_dcf(scores: Scores, same: Truths, p_target: float = 0.01, c_miss: float = 1.0,
            c_fa: float = 1.0) -> dict[str, float]:
    """{min_dcf (normalised), min_dcf_raw, threshold} at the cheapest threshold."""
    fpr, tpr, thresholds = roc(scores, same)
    cost = c_miss * (1.0 - tpr) * p_target + c_fa * fpr * (1.0 - p_target)
    k = int(np.argmin(cost))
    default = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return {"min_dcf": float(cost[k] / default), "min_dcf_raw": float(cost[k]), "threshold": float(thresholds[k])}


def tar_at_far(scores: Scores, same: Truths, far: float) -> float:
    """The true-accept rate at the strictest threshold that lets through at most `far` of the
    different-identity trials (the best such rate on the ROC)."""
    fpr, tpr, _ = roc(scores, same)
    allowed = fpr <= far + 1e-12
    return float(tpr[allowed].max())


def rank1(similarity: np.ndarray, probe_ids: Sequence[Any], gallery_ids: Sequence[Any]) -> float:
    """Share of probes (rows) whose most similar gallery entry (column) has their identity."""
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.shape != (len(probe_ids), len(gallery_ids)) or not len(probe_ids):
        raise ValueError(f"a similarity of shape {sim.shape} for {len(probe_ids)} probes and {len(gallery_ids)} entries")
    best = sim.argmax(axis=1)
    return float(np.mean([gallery_ids[j] == p for j, p in zip(best, probe_ids)]))


def verification_scores(scores: Scores, same: Truths, threshold: float | None = None) -> dict[str, Any]:
    """Every metric of a trial list; with `threshold` (chosen on validation trials), the
    false-accept and false-reject rates and the accuracy of deciding there."""
    from sklearn.metrics import roc_auc_score

    s, y = _arrays(scores, same)
    rate, at = eer(s, y)
    dcf = min_dcf(s, y)
    out: dict[str, Any] = {"n_trials": int(len(s)), "n_same": int(y.sum()), "eer": rate, "eer_threshold": at,
                           "min_dcf": dcf["min_dcf"], "min_dcf_raw": dcf["min_dcf_raw"],
                           "tar_at_far_1e-2": tar_at_far(s, y, 1e-2), "tar_at_far_1e-3": tar_at_far(s, y, 1e-3),
                           "roc_auc": float(roc_auc_score(y, s))}
    if threshold is not None:
        accept = s >= threshold
        out |= {"threshold": float(threshold), "far": float(accept[~y].mean()), "frr": float((~accept[y]).mean()),
                "accuracy": float((accept == y).mean())}
    return out


def draw_trials(identities: Sequence[Any], n_trials: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same/different trials among examples (indices a, b and the truth), drawn with `seed`:
    up to n_trials / 2 same-identity pairs and the rest different-identity pairs, each pair
    at most once; every pair when there are fewer."""
    ids = np.asarray([str(v) for v in identities])
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(ids):
        groups.setdefault(v, []).append(i)
    within = [(a, b) for members in groups.values() for k, a in enumerate(members) for b in members[k + 1:]]
    n_same = min(len(within), n_trials // 2)
    same = [within[k] for k in sorted(rng.choice(len(within), n_same, replace=False))] if n_same else []
    n_all = len(ids) * (len(ids) - 1) // 2
    n_diff = min(n_all - len(within), n_trials - n_same)
    different: set[tuple[int, int]] = set()
    if 2 * n_diff >= n_all - len(within):  # most of them (at most 2 x n_trials): list them all, then choose
        every = [(a, b) for a in range(len(ids)) for b in range(a + 1, len(ids)) if ids[a] != ids[b]]
        different = {every[k] for k in rng.choice(len(every), n_diff, replace=False)}
    while len(different) < n_diff:  # a few of many: draw at random, a rejected pair costs little
        a, b = (int(x) for x in rng.integers(0, len(ids), size=2))
        if ids[a] != ids[b]:
            different.add((min(a, b), max(a, b)))
    pairs = same + sorted(different)
    a_idx = np.array([p[0] for p in pairs], dtype=np.int64)
    b_idx = np.array([p[1] for p in pairs], dtype=np.int64)
    return a_idx, b_idx, ids[a_idx] == ids[b_idx]


def gallery_split(identities: Sequence[Any], seed: int) -> tuple[list[int], list[int]]:
    """1:N identification from one set: (gallery, probes); each identity's enrollment is one
    of its examples chosen with `seed`, its other examples are probes."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(identities))
    enrolled: dict[str, int] = {}
    for i in order:
        enrolled.setdefault(str(identities[i]), int(i))
    gallery = sorted(enrolled.values())
    chosen = set(gallery)
    return gallery, [i for i in range(len(identities)) if i not in chosen]


TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "same", "target"}, {"0", "false", "no", "different", "nontarget"}


def read_trials(path: Path) -> tuple[list[str], list[str], list[bool]]:
    """A trials file (CSV or TSV with columns a, b, same: two example ids and whether they are one
    identity: 1/0, true/false, same/different, target/nontarget). Every bad row is named."""
    from mmcli.data.manifest import read_manifest
    from mmcli.errors import BadRow, DataError

    table = read_manifest(path)
    missing = [c for c in ("a", "b", "same") if table.rows and c not in table.rows[0]]
    if not table.rows or missing:
        raise DataError(f"{path}: a trials file needs the columns a, b and same"
                        + (f" (missing: {', '.join(missing)})" if missing else " and at least one row"))
    a, b, same, bad = [], [], [], []
    for i, row in enumerate(table.rows, start=1):
        word = str(row.get("same") or "").strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            bad.append(BadRow(path.name, i, "same", f"'{word}' is not 1/0, true/false, same/different or target/nontarget"))
        for column in ("a", "b"):
            if not str(row.get(column) or "").strip():
                bad.append(BadRow(path.name, i, column, "no example id"))
        a.append(str(row.get("a") or "").strip())
        b.append(str(row.get("b") or "").strip())
        same.append(word in TRUE_WORDS)
    if bad:
        raise DataError(f"{path}: bad trials", bad)
    return a, b, same


def trial_indices(path: Path, trials: tuple[list[str], list[str], list[bool]],
                  ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trials' rows in the scored examples (by id); an id not among them is an error naming its row."""
    from mmcli.errors import BadRow, DataError

    where = {str(v): i for i, v in enumerate(ids)}
    a, b, same = trials
    bad = [BadRow(path.name, k + 1, column, f"example '{v}' is not among the {len(where)} examples scored")
           for k, (x, y) in enumerate(zip(a, b)) for column, v in (("a", x), ("b", y)) if v not in where]
    if bad:
        raise DataError(f"{path}: trials name examples that were not scored (evaluate scores the test split unless "
                        f"--data or --split say otherwise)", bad)
    return (np.array([where[v] for v in a]), np.array([where[v] for v in b]), np.asarray(same, dtype=bool))
