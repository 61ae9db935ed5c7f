"""Multi-label classification: any number of labels per example.

The label column holds the labels joined by `data.label_separator` (`|` by default), or a
JSON list (`["dog", "frisbee"]`, as JSONL manifests write it); an empty value means no
label. A sigmoid output per label, binary cross-entropy, and a threshold per label chosen
on the validation split (the one that maximises that label's F1; 0.5 where validation
has no positive). Metrics: micro-F1, macro-F1 (over labels with a positive in the truth
or the predictions), mean average precision (over labels with a positive), subset
accuracy (every label right).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmcli.heads import TASKS, Task, f1_statistics, mixed
from mmcli.heads.classification import ClassificationHead

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch


def split_labels(value: str, separator: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            items = None
        if isinstance(items, list):
            return [str(v).strip() for v in items if str(v).strip()]
    return [part.strip() for part in value.split(separator) if part.strip()]


class MultiLabel(Task):
    name = "multilabel"
    default_metric = "micro_f1"
    rules = "epochs scored with their own validation thresholds"  # since 2026-12-07: runs kept at 0.5 train again
    metrics = ("micro_f1", "macro_f1", "mean_average_precision", "subset_accuracy", "loss")
    lower_is_better = ("loss",)

    def _sep(self) -> str:
        return self.config.data.label_separator if self.config is not None else "|"

    def names(self, train_values: list[str]) -> list[str]:
        return sorted({label for v in train_values for label in split_labels(v, self._sep())})

    def encode(self, values: list[str], names: list[str]) -> torch.Tensor:
        index = {n: i for i, n in enumerate(names)}
        out = torch.zeros(len(values), len(names))
        for row, value in enumerate(values):
            for label in split_labels(value, self._sep()):
                if label in index:  # a label never seen in training cannot be predicted: left out
                    out[row, index[label]] = 1.0
        return out

    def build_head(self, in_dim: int, n_outputs: int, hidden_dim: int, dropout: float) -> nn.Module:
        return ClassificationHead(in_dim, n_outputs, hidden_dim, dropout)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])

    def thresholds(self, n: int) -> torch.Tensor:
        values = self.state.get("thresholds")
        return torch.tensor(values, dtype=torch.float32) if values and len(values) == n else torch.full((n,), 0.5)

    def after_fit(self, logits: torch.Tensor, targets: torch.Tensor, names: list[str]) -> dict[str, Any]:
        probs = torch.sigmoid(logits.float())
        candidates = torch.linspace(0.05, 0.95, 19)
        chosen = []
        for j in range(len(names)):
            y = targets[:, j] > 0.5
            if not y.any():
                chosen.append(0.5)
                continue
            best, best_f1 = 0.5, 0.0  # nothing beats 0.5 unless it finds a true positive
            for t in sorted(candidates.tolist(), key=lambda c: abs(c - 0.5)):  # ties go to the one nearest 0.5
                p = probs[:, j] >= t
                tp = float((p & y).sum())
                f1 = 2 * tp / max(1.0, float(p.sum()) + float(y.sum()))
                if f1 > best_f1 + 1e-12:
                    best, best_f1 = t, f1
            chosen.append(round(best, 4))
        return {"thresholds": chosen}

    def validation_score(self, outputs, data, names: list[str]) -> dict[str, Any]:
        """With the thresholds this epoch's model would get if training ended here (chosen on
        these rows, as `after_fit` chooses them for the kept epoch). At 0.5 an epoch whose
        probabilities rank the labels well but stay below 0.5 would score as predicting
        no label, and the epoch kept would be the one nearest to always naming the most
        frequent labels."""
        tuned = type(self)(self.config, {**self.state, **self.after_fit(outputs, data.labels, names)})
        return tuned.score(outputs, data, names)

    def average(self, outputs: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
        """Each label's predicted probability averaged, as logits (sigmoid gives it back)."""
        probs = mixed(torch.stack([torch.sigmoid(o.float()) for o in outputs]), weights)
        return torch.logit(probs, eps=1e-7)

    def errors(self, logits: torch.Tensor, targets: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        """The examples whose predicted label set differs from the true one, most wrong labels first."""
        answers = self.predict(logits, names, top_k)
        out = []
        for i, answer in enumerate(answers):
            true = [names[j] for j in range(len(names)) if float(targets[i, j]) > 0.5]
            wrong = len(set(true) ^ set(answer["labels"]))
            if wrong:
                out.append({"row": i, "true": true, "wrong_labels": wrong, **answer})
        return sorted(out, key=lambda e: -e["wrong_labels"])

    def evaluate(self, logits: torch.Tensor, targets: torch.Tensor, names: list[str]) -> dict[str, Any]:
        from sklearn.metrics import average_precision_score

        n = len(targets)
        probs = torch.sigmoid(logits.float())
        pred = probs >= self.thresholds(len(names))
        truth = targets > 0.5
        tp, fp, fn = (pred & truth).sum(0).float(), (pred & ~truth).sum(0).float(), (~pred & truth).sum(0).float()
        denom = 2 * tp + fp + fn
        f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
        seen = denom > 0
        positives = truth.sum(0) > 0
        ap = [float(average_precision_score(truth[:, j].numpy(), probs[:, j].numpy())) for j in range(len(names)) if positives[j]]
        micro = 2 * tp.sum() / max(1.0, float(denom.sum()))
        return {
            "n_examples": int(n),
            "micro_f1": float(micro),
            "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
            "mean_average_precision": sum(ap) / len(ap) if ap else 0.0,
            "subset_accuracy": float((pred == truth).all(dim=1).float().mean()) if n else 0.0,
            "loss": float(nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)) if n else float("nan"),
            "per_label": {names[j]: {"f1": float(f1[j]), "support": int(truth[:, j].sum()), "threshold": float(self.thresholds(len(names))[j])}
                          for j in range(len(names))},
        }

    def row_statistics(self, logits: torch.Tensor, targets: torch.Tensor, metric: str):
        """With the run's thresholds: micro-F1, each row's true positives, false positives
        and false negatives over the labels; macro-F1, those of each label; subset accuracy,
        the row's label set right or not; loss, its mean binary cross-entropy. Mean average
        precision ranks the rows: none."""
        import numpy as np

        truth = (targets > 0.5).numpy()
        pred = (torch.sigmoid(logits.float()) >= self.thresholds(truth.shape[1])).numpy()
        tp, fp, fn = (pred & truth).astype(float), (pred & ~truth).astype(float), (~pred & truth).astype(float)
        if metric == "subset_accuracy":
            return (pred == truth).all(axis=1).astype(float)[:, None], lambda m: m[..., 0]
        if metric == "loss":
            rows = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
            return rows.mean(dim=1).double().numpy()[:, None], lambda m: m[..., 0]
        if metric == "micro_f1":
            def micro(m):
                return np.divide(2 * m[..., 0], np.maximum(1e-12, 2 * m[..., 0] + m[..., 1] + m[..., 2]))

            return np.stack([tp.sum(1), fp.sum(1), fn.sum(1)], axis=1), micro
        return f1_statistics(tp, fp, fn) if metric == "macro_f1" else None

    def csv_table(self, predictions: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        rows = [[p["id"], "|".join(p["labels"]), "|".join(f"{p['scores'][n]:.6f}" for n in p["labels"]),
                 "|".join(p["modalities_used"])] for p in predictions]
        return ["id", "labels", "scores", "modalities_used"], rows

    def predict(self, logits: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        probs = torch.sigmoid(logits.float())
        above = probs >= self.thresholds(len(names))
        out = []
        for row_p, row_a in zip(probs.tolist(), above.tolist()):
            chosen = sorted((j for j, a in enumerate(row_a) if a), key=lambda j: -row_p[j])
            top = sorted(range(len(names)), key=lambda j: -row_p[j])[: max(1, top_k)]
            out.append({"labels": [names[j] for j in chosen], "scores": {names[j]: round(row_p[j], 6) for j in chosen},
                        "top": {names[j]: round(row_p[j], 6) for j in top}})
        return out

    def prior_outputs(self, train_targets: torch.Tensor, n_outputs: int, n: int, metric: str | None = None) -> torch.Tensor:
        """The best answer that sees no input, for the metric it is scored on: one label set
        for every example, chosen on the training split (as transcription's baseline is the
        best constant transcript). micro-F1: the k most frequent labels, k best for the
        training split's micro-F1; macro-F1: every label seen in training; subset accuracy:
        the most frequent training label set; loss and mean average precision: each label's
        training frequency. That frequency alone, scored at 0.5, predicts no label wherever
        none is on half the examples: micro-F1 0, a floor any model passes. As logits at the
        default threshold 0.5: a chosen label's probability is 0.5 + rate / 2, another's rate / 2."""
        y = (train_targets > 0.5).float()
        rate = y.mean(dim=0) if len(y) else torch.zeros(n_outputs)
        if metric not in ("micro_f1", "macro_f1", "subset_accuracy"):
            probs = rate.clamp(1e-4, 1 - 1e-4)
        else:
            probs = (rate / 2 + 0.5 * _constant_set(y, rate, metric).float()).clamp(1e-4, 1 - 1e-4)
        return torch.log(probs / (1 - probs)).expand(n, n_outputs).clone()


def _constant_set(y: torch.Tensor, rate: torch.Tensor, metric: str) -> torch.Tensor:
    """The label set (a mask) that `MultiLabel.prior_outputs` names for every example."""
    if metric == "macro_f1":  # each label's F1 alone: always on (2p / (1 + p)) beats never (0)
        return rate > 0
    if metric == "subset_accuracy":
        if not len(y):
            return torch.zeros_like(rate, dtype=torch.bool)
        sets, counts = torch.unique(y.bool(), dim=0, return_counts=True)
        return sets[int(torch.argmax(counts))]  # ties: the first in unique's order
    order = torch.argsort(rate, descending=True, stable=True).tolist()
    counts, positives = y.sum(dim=0), float(y.sum())
    best_k, best, hits = 0, 0.0, 0.0
    for k, j in enumerate(order, start=1):
        hits += float(counts[j])
        denominator = len(y) * k + positives
        f1 = 2 * hits / denominator if denominator else 0.0
        if f1 > best + 1e-12:
            best_k, best = k, f1
    chosen = torch.zeros_like(rate, dtype=torch.bool)
    chosen[order[:best_k]] = True
    return chosen


TASKS.register("multilabel", "several labels per example; sigmoid + BCE; micro/macro-F1, mAP, subset accuracy")(MultiLabel)
