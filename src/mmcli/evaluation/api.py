"""`evaluate_run`: score a run folder's best weights on a split of its data, or other data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmcli import runs
from mmcli.heads import TASKS
from mmcli.pipeline import data_for_run, load_run
from mmcli.training.loop import predict_logits
from mmcli.training.setup import pick_device


def evaluate_run(run_dir: Path, data: str | None = None, split: str = "test", cache_dir: str | None = None,
                 weights: str = "best", progress=None, save: bool = True) -> dict[str, Any]:
    run = load_run(run_dir, weights)
    encoded, table = data_for_run(run, data, split, cache_dir, progress)
    task = TASKS.get(run.config.model.task)()
    device = pick_device(run.config.train.device)
    run.model.to(device)
    logits = predict_logits(run.model, encoded, run.config, device)
    scores = task.evaluate(logits, encoded.labels, run.labels)
    scores.update({
        "split": split if data is None or table.given_splits else "all",
        "data": "training data" if data is None else str(data),
        "weights": weights,
        "epoch": int(run.weights_meta.get("epoch", 0)),
        "modalities": list(run.specs),
    })
    if save:
        runs.write_json(run_dir / f"eval-{split}.json", scores)
    return scores
