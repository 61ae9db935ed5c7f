"""Online gradient blending (Wang, Tran and Feiszli, "What makes training multi-modal
classification networks hard?", CVPR 2020).

The fused head and one auxiliary head per modality each have a loss; their weights are
set after every epoch from how each head generalises and overfits:

    G_k = L_val_k(prev) - L_val_k(now)                          (generalisation gain)
    O_k = (L_val_k - L_train_k)(now) - (L_val_k - L_train_k)(prev)  (overfitting gain)
    w_k ~ G_k / O_k^2, normalised to sum to 1

A head whose validation loss stopped improving, or that overfits fast, gets less weight.
The first epoch uses equal weights; a head with G_k <= 0 gets a floor weight.
"""

from __future__ import annotations

from typing import Any

import torch

from mmcli.data.dataset import Encoded, iterate
from mmcli.data.loader import to_device

FLOOR = 0.01
MIN_OVERFIT = 1e-3
TRAIN_SAMPLE = 512


@torch.no_grad()
def head_losses(model, task, data: Encoded, config, device, limit: int | None = None) -> dict[str, float]:
    """Mean loss of the fused head and of each auxiliary head over `data` (eval mode)."""
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    for batch in iterate(data, config.data, config.eval.batch_size):
        if limit is not None and count >= limit:
            break
        batch = to_device(batch, device)
        n = len(batch.index)
        for k, v in model.head_losses(batch, task).items():
            totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    return {k: v / max(1, count) for k, v in totals.items()}


class GradientBlender:
    def __init__(self, heads: list[str]):
        self.heads = heads
        self.previous: dict[str, tuple[float, float]] | None = None
        self.weights = {h: 1.0 / len(heads) for h in heads}

    def update(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float]:
        now = {h: (train[h], val[h]) for h in self.heads}
        if self.previous is not None:
            raw = {}
            for h in self.heads:
                (t0, v0), (t1, v1) = self.previous[h], now[h]
                gain = v0 - v1
                overfit = max((v1 - t1) - (v0 - t0), MIN_OVERFIT)
                raw[h] = max(gain, 0.0) / overfit**2
            total = sum(raw.values())
            if total > 0:
                mixed = {h: max(r / total, FLOOR) for h, r in raw.items()}
                norm = sum(mixed.values())
                self.weights = {h: w / norm for h, w in mixed.items()}
        self.previous = now
        return dict(self.weights)

    def step(self, model, task, train_part: Encoded, val_part: Encoded, config, device) -> dict[str, Any]:
        train = head_losses(model, task, train_part, config, device, TRAIN_SAMPLE)
        val = head_losses(model, task, val_part, config, device)
        model.blend = self.update(train, val)
        return model.blend
