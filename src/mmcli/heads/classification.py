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
        from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

        pred = logits.argmax(dim=1).numpy()
        true = labels.numpy()
        ids = list(range(len(names)))
        precision, recall, f1, support = precision_recall_fscore_support(true, pred, labels=ids, zero_division=0)
        return {
            "n_examples": int(len(true)),
            "accuracy": float(accuracy_score(true, pred)),
            # over the classes that occur in the truth or the predictions (scikit-learn's default)
            "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
            "loss": float(nn.functional.cross_entropy(logits, labels)),
            "per_class": {
                names[i]: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
                for i in ids
            },
            "confusion_matrix": {"labels": names, "matrix": confusion_matrix(true, pred, labels=ids).tolist()},
        }

    def predict(self, logits: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        probs = torch.softmax(logits.float(), dim=1)
        k = max(1, min(top_k, len(names)))
        values, index = probs.topk(k, dim=1)
        out = []
        for row_v, row_i in zip(values.tolist(), index.tolist()):
            out.append({"label": names[row_i[0]], "score": row_v[0],
                        "probabilities": {names[i]: round(v, 6) for v, i in zip(row_v, row_i)}})
        return out


TASKS.register("classification", "one label per example; cross-entropy; accuracy, macro-F1")(Classification)
