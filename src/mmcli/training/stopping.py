"""When a run keeps an epoch, stops early, or begins another learning-rate cycle: the
rules of the training loop (`mmcli.training.loop`), on its validation scores and losses."""

from __future__ import annotations

import math
import typing
from typing import Any

from mmcli.config import Config, TrainConfig


def better(task, metric: str, new: float, old: float | None) -> bool:
    if old is None or math.isnan(old):
        return True
    return new < old if metric in task.lower_is_better else new > old


def val_loss(record: dict[str, Any]) -> float | None:
    """An epoch record's validation loss, when it has a finite one."""
    loss = record.get("val_loss")
    return loss if isinstance(loss, float) and math.isfinite(loss) else None


def tie_won_on_loss(record: dict[str, Any], value: float, result) -> bool:
    """The same validation score as the kept epoch, with a lower validation loss. A small
    split's accuracy often comes back to an early lucky peak later in training; the later
    model, which fits the validation rows better, is the one to keep."""
    if value != result.best_metric:
        return False
    best: dict[str, Any] = next((h for h in result.history if h.get("epoch") == result.best_epoch), {})
    loss, before = val_loss(record), val_loss(best)
    return loss is not None and before is not None and loss < before


def loss_fell(record: dict[str, Any], history: list[dict[str, Any]]) -> bool:
    """Whether this epoch's validation loss is the lowest yet. On a small validation split
    a score such as accuracy moves in steps of whole examples and can sit on a lucky early
    peak while the loss still falls; early stopping waits while either improves (the
    epoch kept is still the one with the best score)."""
    loss = val_loss(record)
    before = [v for v in map(val_loss, history) if v is not None]
    return loss is not None and (not before or loss < min(before))


def stops(config: Config, epoch: int, stale: int) -> bool:
    """Early stopping: `patience` epochs without a better validation score or a lower
    validation loss, once the run has reached `min_epochs`."""
    train = config.train  # min_epochs counts from the start of the epoch's learning-rate cycle
    return 0 < typing.cast(int, train.patience) <= stale and (epoch - 1) % (train.epochs or epoch) + 1 >= (train.min_epochs or 0)


def another_cycle(cfg: TrainConfig, epoch: int, stale: int, validated: bool) -> bool:
    """Whether a run that has just finished epoch `epoch` begins another learning-rate cycle:
    at the end of a cycle, with cycles left, a validation score to go by (`validated`), and a
    validation score or loss that improved within the last `patience` epochs (early stopping
    had not ended it)."""
    epochs = typing.cast(int, cfg.epochs)
    return (validated and epoch % epochs == 0 and epoch < epochs * (cfg.max_cycles or 1)
            and stale < typing.cast(int, cfg.patience))


def cycle_note(last: int, end: int) -> str:
    """What a run says when another learning-rate cycle begins after epoch `last`."""
    return f"still improving at epoch {last}: another learning-rate cycle, to epoch {end}"


def log_cycle(last: int, end: int) -> None:
    """The INFO record of a new cycle, for a progress display that does not show it itself."""
    import logging

    logging.getLogger("mmcli").info("validation %s", cycle_note(last, end))
