"""Regression: a numeric target, standardised with the training split's mean and std.

The head predicts the standardised value; metrics and predictions are in the target's
own units. Loss: `model.loss: mse` (default) or `huber` (on the standardised scale, so
its threshold of 1 means one standard deviation). Metrics: MAE, RMSE, R^2, and the loss.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmcli.heads import TASKS, Task, mixed
from mmcli.heads.classification import ClassificationHead

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class Regression(Task):
    name = "regression"
    default_metric = "mae"
    metrics = ("mae", "rmse", "r2", "loss")
    lower_is_better = ("mae", "rmse", "loss")

    def names(self, train_values: list[str]) -> list[str]:
        return [self.config.data.label if self.config is not None else "value"]

    def check_state(self, where: str) -> None:
        from mmcli.errors import DataError

        if "mean" not in self.state or "std" not in self.state:
            raise DataError(f"{where}: target.json with the target's mean and std is missing; the run cannot give values "
                            "in the target's units")

    def fit_state(self, train_values: list[str], names: list[str]) -> dict[str, Any]:
        xs = [x for x in map(_number, train_values) if x is not None]
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / max(1, len(xs) - 1)) if len(xs) > 1 else 0.0
        return {"mean": mean, "std": std if std > 0 else 1.0}

    def check(self, values: list[str], where: list[str], names: list[str]) -> list[tuple[int, str]]:
        return [(i, f"'{v}' is not a finite number") for i, v in enumerate(values) if _number(v) is None]

    def encode(self, values: list[str], names: list[str]) -> torch.Tensor:
        mean, std = self.state.get("mean", 0.0), self.state.get("std", 1.0)
        return torch.tensor([((_number(v) if _number(v) is not None else mean) - mean) / std for v in values], dtype=torch.float32)

    def n_outputs(self, names: list[str]) -> int:
        return 1

    def build_head(self, in_dim: int, n_outputs: int, hidden_dim: int, dropout: float) -> nn.Module:
        return ClassificationHead(in_dim, 1, hidden_dim, dropout)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        kind = (self.config.model.loss if self.config is not None else None) or "mse"
        if kind == "huber":
            return nn.functional.huber_loss(pred, target, reduction=reduction)
        return nn.functional.mse_loss(pred, target, reduction=reduction)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self._loss(outputs.squeeze(-1), batch["label"])

    def values(self, outputs: torch.Tensor) -> torch.Tensor:
        """Standardised outputs back in the target's units (float64: a large mean keeps its digits)."""
        return outputs.double().squeeze(-1) * self.state.get("std", 1.0) + self.state.get("mean", 0.0)

    def average(self, outputs: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
        """The mean prediction (standardised, as every run's outputs)."""
        return mixed(torch.stack([o.float() for o in outputs]), weights)

    def errors(self, outputs: torch.Tensor, targets: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        """Every example with its error in the target's units, the largest first (a value has no
        right or wrong, only a distance)."""
        values, truth = self.values(outputs).tolist(), self.values(targets.unsqueeze(-1)).tolist()
        rows = [{"row": i, "true": round(t, 6), "value": round(v, 6), "error": round(v - t, 6)}
                for i, (v, t) in enumerate(zip(values, truth))]
        return sorted(rows, key=lambda e: -abs(e["error"]))

    def evaluate(self, outputs: torch.Tensor, targets: torch.Tensor, names: list[str]) -> dict[str, Any]:
        n = len(targets)
        std = self.state.get("std", 1.0)
        err = (outputs.double().squeeze(-1) - targets.double()) * std  # differences before adding the mean back
        true = targets.double() * std
        ss_tot = float(((true - true.mean()) ** 2).sum()) if n else 0.0
        return {
            "n_examples": int(n),
            "mae": float(err.abs().mean()) if n else float("nan"),
            "rmse": float(err.pow(2).mean().sqrt()) if n else float("nan"),
            "r2": 1.0 - float(err.pow(2).sum()) / ss_tot if ss_tot > 0 else 0.0,
            "loss": float(self._loss(outputs.float().squeeze(-1), targets)) if n else float("nan"),
        }

    def row_statistics(self, outputs: torch.Tensor, targets: torch.Tensor, metric: str):
        """mae: each row's absolute error; rmse: its squared error; r2: its squared error,
        target and squared target (R² = 1 - mean squared error / the targets' variance);
        loss: its loss."""
        import numpy as np

        std = self.state.get("std", 1.0)
        err = ((outputs.double().squeeze(-1) - targets.double()) * std).numpy()
        true = targets.double().numpy() * std
        if metric == "mae":
            return np.abs(err)[:, None], lambda m: m[..., 0]
        if metric == "rmse":
            return (err ** 2)[:, None], lambda m: np.sqrt(m[..., 0])
        if metric == "loss":  # the training loss, mean squared or Huber, on the standardised scale
            rows = self._loss(outputs.float().squeeze(-1), targets.float(), reduction="none")
            return rows.double().numpy()[:, None], lambda m: m[..., 0]
        if metric != "r2":
            return None

        def r2(m):
            var = m[..., 2] - m[..., 1] ** 2
            return np.where(var > 0, 1.0 - m[..., 0] / np.where(var > 0, var, 1.0), 0.0)

        return np.stack([err ** 2, true, true ** 2], axis=1), r2

    def csv_table(self, predictions: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        return ["id", "value", "modalities_used"], [[p["id"], p["value"], "|".join(p["modalities_used"])] for p in predictions]

    def predict(self, outputs: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        return [{"value": round(v, 6)} for v in self.values(outputs).tolist()]

    def prior_outputs(self, train_targets: torch.Tensor, n_outputs: int, n: int, metric: str | None = None) -> torch.Tensor:
        """The training mean (0 on the standardised scale): the baseline that sees no input."""
        return train_targets.float().mean().expand(n, 1).clone()


TASKS.register("regression", "a numeric target; MSE or Huber; MAE, RMSE, R^2")(Regression)
