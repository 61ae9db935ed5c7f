"""The contract every fusion keeps (issue 21): what the core calls, with explicit defaults
instead of attributes probed with `hasattr`.

A fusion is built as `factory(in_dims, out_dim, **options)` (`in_dims`: each modality's
encoder `out_dim`; options declared by the constructor's signature, checked by
`models.check_options`), has `out_dim`, and is called as `fusion(features, mask)` with
`features[m]` an `EncoderOutput` and `mask[m]` a bool tensor [B], False where the example
lacks modality m, whose absence must not change the output beyond itself.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class Fusion(nn.Module):
    """Base of every registered fusion; a plug-in subclasses it too."""

    # True: the fusion's output is the task's outputs already (late fusion: per-modality
    # heads averaged), so no head is put on it
    produces_outputs: ClassVar[bool] = False
    out_dim: int
    # the per-example weight of each modality in the last forward pass [B, M], for
    # `predict --explain` and `evaluate`'s per-class weights; None where the fusion has none
    last_weights: torch.Tensor | None = None

    def forward(self, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
