"""Single-label classification: an MLP head, cross-entropy, accuracy and macro-F1."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmcli.heads import TASKS


class ClassificationHead(nn.Module):
    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, n_classes))

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.net(fused)


class Classification:
    """One label per example, chosen from the labels seen in training."""

    name = "classification"
    default_metric = "accuracy"
    metrics = ("accuracy", "macro_f1", "loss")
    lower_is_better = ("loss",)
    needs_labels = True

    def build_head(self, in_dim: int, n_outputs: int, hidden_dim: int, dropout: float) -> nn.Module:
        return ClassificationHead(in_dim, n_outputs, hidden_dim, dropout)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, batch["label"])

    def evaluate(self, logits: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, Any]:
        return classification_scores(logits, labels, names)

    def prior_outputs(self, train_labels: torch.Tensor, n_outputs: int, n: int) -> torch.Tensor:
        """Outputs of a model that sees no input: the log of the training label prior, so it
        predicts the most frequent training class (the baseline of modality attribution)."""
        counts = torch.bincount(train_labels[train_labels >= 0], minlength=n_outputs).double()
        prior = (counts + 1e-6) / (counts.sum() + 1e-6 * n_outputs)
        return prior.log().float().expand(n, n_outputs).clone()

    def predict(self, logits: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        probs = torch.softmax(logits.float(), dim=1)
        k = max(1, min(top_k, len(names)))
        values, index = probs.topk(k, dim=1)
        out = []
        for row_v, row_i in zip(values.tolist(), index.tolist()):
            out.append({"label": names[row_i[0]], "score": row_v[0],
                        "probabilities": {names[i]: round(v, 6) for v, i in zip(row_v, row_i)}})
        return out


def classification_scores(logits: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, loss, per-class scores and the confusion matrix, from one
    confusion matrix (the numbers equal scikit-learn's; computed here because its input
    checks cost ~0.1 s a call, which every epoch's validation would pay)."""
    import numpy as np

    k = len(names)
    pred = logits.argmax(dim=1).numpy()
    true = labels.numpy()
    matrix = np.bincount(true * k + pred, minlength=k * k).reshape(k, k) if len(true) else np.zeros((k, k), dtype=np.int64)
    tp = np.diag(matrix).astype(float)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(k), where=total > 0)
    seen = (support > 0) | (predicted > 0)  # macro-F1 over the classes in the truth or the predictions
    return {
        "n_examples": int(len(true)),
        "accuracy": float(tp.sum() / len(true)) if len(true) else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "loss": float(nn.functional.cross_entropy(logits, labels)) if len(true) else float("nan"),
        "per_class": {
            names[i]: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i in range(k)
        },
        "confusion_matrix": {"labels": names, "matrix": matrix.tolist()},
    }


TASKS.register("classification", "one label per example; cross-entropy; accuracy, macro-F1")(Classification)
