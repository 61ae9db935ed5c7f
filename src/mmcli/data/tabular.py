"""Numeric and categorical manifest columns as one modality.

A tabular modality names its columns (`columns`) and which of them hold categories
(`categorical`); the others must hold numbers (an empty cell is a missing value). The
statistics are fitted on the training split only, like a tokenizer, and saved in the run
folder as `tabular-<modality>.json`: each numeric column's mean and standard deviation
(missing values become the mean, 0 after standardising) and each categorical column's
values in order of first appearance (index 0: empty or unseen in training).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from mmcli.config import ModalityConfig


def is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def numeric_columns(m: ModalityConfig) -> list[str]:
    return [c for c in m.columns if c not in m.categorical]


def cell_problems(row: dict[str, str], m: ModalityConfig) -> list[tuple[str, str]]:
    """(column, reason) for each numeric cell that is not a finite number."""
    return [(c, f"'{row.get(c, '')}' is not a number (declare the column under categorical if it holds categories)")
            for c in numeric_columns(m) if row.get(c, "").strip() and not is_number(row[c])]


def cells(rows: list[dict[str, str]], m: ModalityConfig) -> list[list[str]]:
    """Each row's cells, numeric columns first, then categorical ones (the stored form)."""
    order = numeric_columns(m) + list(m.categorical)
    return [[row.get(c, "").strip() for c in order] for row in rows]


class TabularCodec:
    """Training-split statistics that turn cells into the encoder's input [N, columns]."""

    kind = "tabular"

    def __init__(self, numeric: list[str], categorical: list[str], stats: dict[str, list[float]],
                 values: dict[str, list[str]]):
        self.numeric, self.categorical, self.stats, self.values = numeric, categorical, stats, values
        self._index = {c: {v: i + 1 for i, v in enumerate(values[c])} for c in categorical}

    @classmethod
    def fit(cls, m: ModalityConfig, train_cells: list[list[str]]) -> "TabularCodec":
        numeric = numeric_columns(m)
        stats, values = {}, {}
        for j, column in enumerate(numeric):
            xs = [float(r[j]) for r in train_cells if r[j]]
            mean = sum(xs) / len(xs) if xs else 0.0
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) if xs else 1.0
            stats[column] = [mean, std if std > 1e-12 else 1.0]
        for j, column in enumerate(m.categorical, start=len(numeric)):
            values[column] = list(dict.fromkeys(r[j] for r in train_cells if r[j]))
        return cls(numeric, list(m.categorical), stats, values)

    def encode(self, rows: list[list[str]]) -> torch.Tensor:
        out = torch.zeros((len(rows), len(self.numeric) + len(self.categorical)), dtype=torch.float32)
        for i, row in enumerate(rows):
            for j, column in enumerate(self.numeric):
                if row[j]:
                    mean, std = self.stats[column]
                    out[i, j] = (float(row[j]) - mean) / std
            for j, column in enumerate(self.categorical, start=len(self.numeric)):
                out[i, j] = self._index[column].get(row[j], 0)
        return out

    def spec(self) -> dict:
        return {"numeric": len(self.numeric), "categories": tuple(len(self.values[c]) for c in self.categorical)}

    def get_vocab_size(self) -> int:
        return 0

    def to_str(self) -> str:
        return json.dumps({"numeric": self.numeric, "categorical": self.categorical, "stats": self.stats,
                           "values": self.values}, indent=1)

    @classmethod
    def load(cls, path: Path) -> "TabularCodec":
        from mmcli.errors import UsageError

        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(d["numeric"], d["categorical"], d["stats"], d["values"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise UsageError(f"{path}: cannot read the tabular statistics ({str(exc)[:200]})") from None
