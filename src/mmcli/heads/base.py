"""The contract of a head that reads every encoder's output itself, in place of a fusion and
a plain head (`Task.build_model_head`: retrieval's two towers, captioning's decoder,
cross-modal translation), with explicit defaults for what only some of them do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch


class TaskHead(nn.Module):
    adds_losses: ClassVar[bool] = False  # its `extra_losses` join the task's loss (translation)

    def after_step(self) -> None:
        """Called after each optimizer step (retrieval clamps its logit scale, as OpenCLIP does)."""

    def extra_losses(self, features: dict, batch: Batch, task: Any) -> dict[str, torch.Tensor]:
        """Losses beside the task's own, by name (`adds_losses` heads)."""
        return {}

    def embed_modalities(self, features: dict) -> dict[str, torch.Tensor] | None:
        """Each modality's embedding for `predict --embed` and search; None: the encoders' pooled vectors."""
        return None
