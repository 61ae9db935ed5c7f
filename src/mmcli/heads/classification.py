"""Single-label classification: an MLP head, cross-entropy, accuracy and macro-F1."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmcli.heads import TASKS, Task, f1_statistics, mixed

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch


class ClassificationHead(nn.Module):
    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, n_classes))

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.net(fused)


class Classification(Task):
    """One label per example, chosen from the labels seen in training.

    `train.class_weights: balanced` weighs each class's loss by n / (classes x count), so
    rare classes count as much as common ones; `train.sampler: weighted` draws training
    examples with probability inversely proportional to their class's count instead.
    `model.task_options.label_smoothing` (0 to below 1) trains toward a target that keeps
    that share of its probability spread over all classes (Szegedy et al., 2016)."""

    name = "classification"
    has_classes = True
    default_metric = "accuracy"
    metrics = ("accuracy", "macro_f1", "loss")
    lower_is_better = ("loss",)
    stratify = True
    options = {"label_smoothing": 0.1}  # docs/results.md#defaults: mdi-icons' names +1.6 points

    def adapt_config(self, config, kinds: dict[str, str]):
        """The options checked, and their values written into the config (so the run's
        config.yaml says which smoothing it trained with)."""
        config = config.copy()
        self.config = config
        self.check_options()
        config.model.task_options = {**self.options, **config.model.task_options}
        return config

    def check_options(self) -> None:
        super().check_options()
        from mmcli.errors import ConfigError

        smoothing = self.option("label_smoothing")
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
            raise ConfigError(f"config key 'model.task_options.label_smoothing': must be a number in [0, 1), got {smoothing!r}")

    def names(self, train_values: list[str]) -> list[str]:
        return sorted(set(train_values))

    def fit_state(self, train_values: list[str], names: list[str]) -> dict[str, Any]:
        counts = {name: 0 for name in names}
        for v in train_values:
            counts[v] += 1
        return {"class_counts": [counts[n] for n in names]}

    def check(self, values: list[str], where: list[str], names: list[str]) -> list[tuple[int, str]]:
        known = set(names)
        return [(i, f"label '{v}' ({where[i]}) never occurs in the training split") for i, v in enumerate(values) if v not in known]

    def doubt(self, train_values: list[str]) -> str | None:
        """Labels joined by the multi-label separator ('cat|dog'), most of them: each is taken
        as one class here, and a test set whose combinations are new cannot be scored."""
        from mmcli.heads.multilabel import split_labels

        separator = self.config.data.label_separator if self.config is not None else "|"
        distinct = sorted(set(train_values))
        joined = [v for v in distinct if len(split_labels(v, separator)) > 1]  # 'a|b', or a JSON list
        if len(joined) < 2 or 2 * len(joined) < len(distinct):
            return None
        return (f"{len(joined)} of the {len(distinct)} distinct training labels hold '{separator}' (such as "
                f"'{joined[0]}'), and each is one class to --task classification: if a row names several labels, "
                "use --task multilabel")

    def encode(self, values: list[str], names: list[str]) -> torch.Tensor:
        index = {label: i for i, label in enumerate(names)}
        return torch.tensor([index.get(v, -1) for v in values], dtype=torch.long)

    def build_head(self, in_dim: int, n_outputs: int, hidden_dim: int, dropout: float) -> nn.Module:
        return ClassificationHead(in_dim, n_outputs, hidden_dim, dropout)

    def class_weights(self) -> torch.Tensor | None:
        if self.config is None or self.config.train.class_weights != "balanced" or "class_counts" not in self.state:
            return None
        counts = torch.tensor(self.state["class_counts"], dtype=torch.float32)
        return counts.sum() / (len(counts) * counts.clamp(min=1.0))

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        weight = self.class_weights()
        return nn.functional.cross_entropy(logits, batch["label"], weight=None if weight is None else weight.to(logits.device),
                                           label_smoothing=float(self.option("label_smoothing")))

    def evaluate(self, logits: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, Any]:
        return classification_scores(logits, labels, names)

    def average(self, outputs: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
        """The predicted probabilities averaged, as log-probabilities: softmax gives them back,
        so accuracy, F1 and the loss are the averaged distribution's (UME, Du et al., 2023)."""
        probs = mixed(torch.stack([o.float().softmax(dim=1) for o in outputs]), weights)
        return probs.clamp_min(torch.finfo(torch.float32).tiny).log()  # a 0 would make the loss infinite

    def row_statistics(self, outputs: torch.Tensor, targets: torch.Tensor, metric: str):
        """accuracy: each row right or not; loss: its cross-entropy; macro-F1: its share of
        each class's true positives, false positives and false negatives (the F1 of every
        class in the truth or the predictions, averaged, as `classification_scores`)."""
        import numpy as np

        pred, true = outputs.argmax(dim=1).numpy(), targets.numpy()
        if metric == "accuracy":
            return (pred == true).astype(float)[:, None], lambda m: m[..., 0]
        if metric == "loss":
            rows = nn.functional.cross_entropy(outputs.float(), targets, reduction="none")
            return rows.double().numpy()[:, None], lambda m: m[..., 0]
        if metric != "macro_f1":
            return None
        p, t = np.eye(outputs.shape[1])[pred], np.eye(outputs.shape[1])[true]
        return f1_statistics(p * t, p * (1 - t), (1 - p) * t)

    def sample_weights(self, targets: torch.Tensor) -> torch.Tensor:
        """Per-example weights of `train.sampler: weighted`: 1 / the count of its class."""
        counts = torch.bincount(targets.clamp(min=0)).float()
        return 1.0 / counts[targets.clamp(min=0)]

    def prior_outputs(self, train_labels: torch.Tensor, n_outputs: int, n: int, metric: str | None = None) -> torch.Tensor:
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


    def errors(self, logits: torch.Tensor, targets: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        """The misclassified examples, the most confident mistakes first."""
        answers = self.predict(logits, names, top_k)
        probs = torch.softmax(logits.float(), dim=1)
        wrong = [i for i in range(len(targets)) if int(logits[i].argmax()) != int(targets[i])]
        wrong.sort(key=lambda i: -answers[i]["score"])
        return [{"row": i, "true": names[int(targets[i])], "true_score": round(float(probs[i, int(targets[i])]), 6), **answers[i]}
                for i in wrong]


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
